"""Stand-in for vLLM's NCCL weight-transfer helpers, imported by TRL's server client; server mode needs NCCL and a
running vLLM server, so it is not part of the stand-in's contract."""


def trainer_init(*args, **kwargs):
    raise NotImplementedError("vLLM stand-in: server mode (NCCL weight transfer) is not emulated")
