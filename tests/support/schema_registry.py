#!/usr/bin/env python3
"""A small in-memory server of the Confluent Schema Registry REST API endpoints that
kafka-backup's schema ID remapping uses, for the tests (no registry implementation that runs
without its own Kafka cluster can be installed from the package registries reachable here).

It numbers schemas globally like the Confluent registry does: registering a schema (text,
type and references) that exists returns its ID; under a new subject it becomes a new version
with the same ID. IDs start at --first-id, so a "source" and a "target" registry number the
same schemas differently.

Usage: schema_registry.py --port N [--first-id 1] [--user name:password] [--seed FILE]
  --seed: JSON list of {"subject", "schema", "schemaType"?, "references"?} registered in order.
Every request is appended to stdout as "METHOD PATH", so a test can count calls.
"""

import argparse
import base64
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote

CT = "application/vnd.schemaregistry.v1+json"


class Registry:
    def __init__(self, first_id):
        self.next_id = first_id
        self.by_id = {}  # id -> schema dict
        self.subjects = {}  # subject -> [ (version, id) ]

    @staticmethod
    def key(s):
        return json.dumps(
            [s["schema"], s.get("schemaType", "AVRO"), s.get("references", [])],
            sort_keys=True,
        )

    def register(self, subject, s):
        for ref in s.get("references", []):
            if not self.version(ref["subject"], ref["version"]):
                raise LookupError(f"reference {ref} does not exist")
        k = self.key(s)
        sid = next((i for i, x in self.by_id.items() if self.key(x) == k), None)
        if sid is None:
            sid = self.next_id
            self.next_id += 1
            self.by_id[sid] = {
                "schema": s["schema"],
                "schemaType": s.get("schemaType", "AVRO"),
                "references": s.get("references", []),
            }
        versions = self.subjects.setdefault(subject, [])
        if not any(i == sid for _, i in versions):
            versions.append((len(versions) + 1, sid))
        return sid

    def version(self, subject, version):
        for v, i in self.subjects.get(subject, []):
            if str(v) == str(version) or (version == "latest" and v == len(self.subjects[subject])):
                return self.entry(subject, v, i)
        return None

    def entry(self, subject, v, i):
        s = self.by_id[i]
        out = {"subject": subject, "version": v, "id": i, "schema": s["schema"]}
        if s["schemaType"] != "AVRO":
            out["schemaType"] = s["schemaType"]
        if s["references"]:
            out["references"] = s["references"]
        return out


def handler(reg, user):
    class H(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def reply(self, code, body):
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", CT)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def authorized(self):
            if not user:
                return True
            want = "Basic " + base64.b64encode(user.encode()).decode()
            if self.headers.get("Authorization") == want:
                return True
            self.reply(401, {"error_code": 401, "message": "Unauthorized"})
            return False

        def parts(self):
            print(f"{self.command} {self.path}", flush=True)
            return [unquote(p) for p in self.path.split("?")[0].strip("/").split("/")]

        def do_GET(self):
            p = self.parts()
            if not self.authorized():
                return
            if p == ["subjects"]:
                return self.reply(200, sorted(reg.subjects))
            if p == ["schemas"]:
                return self.reply(200, [reg.entry(s, v, i) for s, vs in sorted(reg.subjects.items()) for v, i in vs])
            if len(p) == 3 and p[:2] == ["schemas", "ids"] and p[2].isdigit():
                s = reg.by_id.get(int(p[2]))
                if s is None:
                    return self.reply(404, {"error_code": 40403, "message": "Schema not found"})
                out = {"schema": s["schema"]}
                if s["schemaType"] != "AVRO":
                    out["schemaType"] = s["schemaType"]
                if s["references"]:
                    out["references"] = s["references"]
                return self.reply(200, out)
            if len(p) == 4 and p[:2] == ["schemas", "ids"] and p[3] == "versions":
                i = int(p[2]) if p[2].isdigit() else -1
                found = [{"subject": s, "version": v} for s, vs in sorted(reg.subjects.items()) for v, x in vs if x == i]
                if not found:
                    return self.reply(404, {"error_code": 40403, "message": "Schema not found"})
                return self.reply(200, found)
            if len(p) == 3 and p[0] == "subjects" and p[2] == "versions":
                if p[1] not in reg.subjects:
                    return self.reply(404, {"error_code": 40401, "message": "Subject not found"})
                return self.reply(200, [v for v, _ in reg.subjects[p[1]]])
            if len(p) == 4 and p[0] == "subjects" and p[2] == "versions":
                e = reg.version(p[1], p[3])
                if e is None:
                    return self.reply(404, {"error_code": 40402, "message": "Version not found"})
                return self.reply(200, e)
            self.reply(404, {"error_code": 404, "message": "no such route"})

        def do_POST(self):
            p = self.parts()
            if not self.authorized():
                return
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))) or b"{}")
            if len(p) == 3 and p[0] == "subjects" and p[2] == "versions":
                try:
                    return self.reply(200, {"id": reg.register(p[1], body)})
                except LookupError as e:
                    return self.reply(422, {"error_code": 42201, "message": str(e)})
            if len(p) == 2 and p[0] == "subjects":
                k = reg.key(body)
                for v, i in reg.subjects.get(p[1], []):
                    if reg.key(reg.by_id[i]) == k:
                        return self.reply(200, reg.entry(p[1], v, i))
                return self.reply(404, {"error_code": 40403, "message": "Schema not found"})
            self.reply(404, {"error_code": 404, "message": "no such route"})

    return H


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--first-id", type=int, default=1)
    ap.add_argument("--user", default="")
    ap.add_argument("--seed", default="")
    a = ap.parse_args()
    reg = Registry(a.first_id)
    if a.seed:
        with open(a.seed) as f:
            for s in json.load(f):
                reg.register(s["subject"], s)
    srv = ThreadingHTTPServer(("127.0.0.1", a.port), handler(reg, a.user))
    print(f"listening {a.port}", flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
