"""A gRPC client that is not ours (grpcio from PyPI), as Kubernetes probes and grpcurl are.

  grpc_probe.py health HOST:PORT     prints the overall grpc.health.v1 status
                                     (SERVING, NOT_SERVING, ...) or UNREACHABLE
  grpc_probe.py services HOST:PORT   prints the services listed by server reflection
"""
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)


def health(addr: str) -> str:
    with grpc.insecure_channel(addr) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            resp = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=2)
        except grpc.RpcError as e:
            return "UNREACHABLE" if e.code() == grpc.StatusCode.UNAVAILABLE else e.code().name
        return health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)


def services(addr: str) -> str:
    with grpc.insecure_channel(addr) as channel:
        return "\n".join(sorted(ProtoReflectionDescriptorDatabase(channel).get_services()))


if __name__ == "__main__":
    verb, addr = sys.argv[1], sys.argv[2]
    print({"health": health, "services": services}[verb](addr))
