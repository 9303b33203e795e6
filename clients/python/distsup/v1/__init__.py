"""Generated protobuf and gRPC modules of distsup.v1 (made by clients/python/gen_stubs.sh).

supervisor_pb2 / supervisor_pb2_grpc: the public API (service distsup.v1.Supervisor).
child_pb2: the child frame protocol spoken by workers on stdin/stdout."""
