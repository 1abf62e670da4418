#!/usr/bin/env bash
# Offline validation of the deployment files: Kubernetes manifests against the bundled
# schemas of kubernetes-validate (PyPI), the compose file and Dockerfile by structure.
set -euo pipefail
cd "$(dirname "$0")"
python3 -c 'import kubernetes_validate' 2>/dev/null || python3 -m pip install --quiet 'kubernetes-validate==1.31.0'
python3 -m kubernetes_validate --strict -k 1.31.0 k8s/*.yaml
python3 - <<'PY'
import sys, yaml
doc = yaml.safe_load(open("docker-compose.yml"))
services = doc.get("services") or {}
errors = []
for name in ("coordinator", "worker"):
    svc = services.get(name)
    if not svc:
        errors.append(f"service {name} missing")
        continue
    if not (svc.get("image") or svc.get("build")):
        errors.append(f"service {name} has neither image nor build")
    if not isinstance(svc.get("command"), list):
        errors.append(f"service {name} has no command list")
if services.get("worker", {}).get("deploy", {}).get("replicas") != 3:
    errors.append("worker must run 3 replicas")
lines = open("Dockerfile").read().splitlines()
if sum(1 for l in lines if l.startswith("FROM ")) < 2:
    errors.append("Dockerfile is not multi-stage")
if errors:
    sys.exit("deploy validation failed: " + "; ".join(errors))
print("docker-compose.yml and Dockerfile: ok")
PY
