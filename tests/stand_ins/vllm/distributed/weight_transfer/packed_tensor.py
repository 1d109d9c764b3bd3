"""Stand-in, see nccl_common.py."""


def packed_nccl_broadcast_producer(*args, **kwargs):
    raise NotImplementedError("vLLM stand-in: server mode (NCCL weight transfer) is not emulated")
