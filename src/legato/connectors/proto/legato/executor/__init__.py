"""Generated code of executor.proto (scripts/gen_proto.sh)."""
