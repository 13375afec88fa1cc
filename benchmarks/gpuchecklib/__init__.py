"""The parts of benchmarks/gpu_check.py: shared helpers (common), kernel parity (parity), speed and
bf16 (speed), DDP (ddp), enhancement real-time factor (rtf) and the printed summary (report)."""
