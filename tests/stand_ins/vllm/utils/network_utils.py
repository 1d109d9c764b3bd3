"""Stand-in for `vllm.utils.network_utils`: imported by TRL's server client (server mode is not exercised)."""


def get_ip() -> str:
    return "127.0.0.1"
