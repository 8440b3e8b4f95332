"""An RPC server that measures NPU programs for distributed tuning (docs/TUNING.md).

    python -m tvm.exec.rpc_tracker --host 0.0.0.0 --port 9190          # once (needs tornado)
    python scripts/npu_rpc_server.py --tracker HOST:9190 --key npu      # on every measuring machine
    tvm-npu tune model.tflite --rpc-tracker HOST:9190 --rpc-key npu     # or tune(..., runner=rpc_runner(...))

The server registers `tvm_npu.tuning.measure_program` (the emulator's timing of a program) with
`server_init_callback`, and serves sessions from the tracker's queue for `--key`.
"""

from __future__ import annotations

import argparse
import signal
import sys


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tracker", required=True, help="HOST:PORT of the RPC tracker")
    ap.add_argument("--key", default="npu", help="the device key the tuner asks the tracker for")
    ap.add_argument("--host", default="127.0.0.1", help="address to listen on")
    ap.add_argument("--port", type=int, default=9091, help="first port to try")
    args = ap.parse_args(argv)
    from tvm import rpc

    from tvm_npu.tuning.rpc import register_measure

    host, _, port = args.tracker.rpartition(":")
    server = rpc.Server(args.host, port=args.port, port_end=args.port + 200, tracker_addr=(host, int(port)),
                        key=args.key, server_init_callback=register_measure)
    print(f"npu rpc server on {args.host}:{server.port}, key {args.key!r}, tracker {args.tracker}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        signal.pause()
    finally:
        server.terminate()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
