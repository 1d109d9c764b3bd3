"""Tools around a run: the `vlm-grpo` command, the launcher (launch.sh), reward plots, the log monitor."""
