"""The planner's fixed assumptions: numbers it does not read from the config (each printed with the plan)."""

GiB = 1024**3

CUDA_CONTEXT_GB = 1.0  # CUDA context, cuBLAS/NCCL workspaces: outside torch's allocator (typically 0.5-1.5 GB)
DS_REDUCE_BUCKET = int(5e8)  # DeepSpeed's default reduce_bucket_size (elements; deepspeed/runtime/zero/config.py)
DS_PREFETCH_BUCKET = int(5e7)  # ZeRO-3 stage3_prefetch_bucket_size default
NF4_BYTES = 0.5 + 0.5 / 64 * 0.25  # 4-bit weight + double-quantised absmax per 64-block (bitsandbytes nf4)
TRL_TOKEN_CHUNK = 4096  # trl/kernels/chunked_logprob.py TOKEN_CHUNK_SIZE
TRL_VOCAB_CHUNK = 32768  # trl/trainer/utils.py _CHUNKED_LOGPROB_CHUNK_SIZE
DEFAULT_TEXT_TOKENS = 256  # prompt text around the image: template, system turn, question / instruction
QWEN_VIDEO_MAX_PIXELS = 768 * 28 * 28  # qwen-vl-utils' per-frame VIDEO_MAX_PIXELS when the config sets none
VAE_DECODE_FACTOR = 12  # VAE decode peak ~ factor x (H x W x base_dim) values per image (Wan-2.1 decoder; unmeasured)
VAE_ENCODE_FACTOR = 8  # VAE encode peak, the same way (the edit pipeline encodes the condition image)
