"""Reward infrastructure: TRL's reward contract and user rewards by import path, the VLM judge client and the local
judge server, the sandbox that runs model-written programs."""
