"""The simulator on 127.0.0.1: in a background thread (tests) or as a process.

    with SimulatorServer(SimConfig(latency_ms=100, concurrency_cap=32)) as sim:
        settings = LLMSettings(base_url=sim.base_url, ...)

    python -m simulator.server --port 8765 --config '{"rpm": 600}'
"""

import argparse
import socket
import threading
import time

import uvicorn

from simulator.loose import KNOBS
from simulator.simulator import SimConfig, Simulator


class SimulatorServer:
    """The simulator on 127.0.0.1 in a background thread; stops on exit."""

    def __init__(self, config: SimConfig | None = None, port: int = 0):
        self.simulator = Simulator(config)
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", port))
        self.port = self._sock.getsockname()[1]
        self._server = uvicorn.Server(uvicorn.Config(
            self.simulator, log_level="critical", lifespan="off", access_log=False,
            timeout_graceful_shutdown=1,
        ))
        self._thread = threading.Thread(target=self._server.run,
                                        kwargs={"sockets": [self._sock]}, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> "SimulatorServer":
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the simulator did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._sock.close()

    def stats(self) -> dict:
        return self.simulator.stats()

    def configure(self, **knobs) -> None:
        """Change some knobs; `loose=r` also sets every loose_* rate not given here (the
        rule is SimConfig's own: the current loose_* rates give way to it)."""
        current = self.simulator.config.model_dump()
        if knobs.get("loose") is not None:
            current = {k: v for k, v in current.items() if k not in KNOBS}
        self.simulator.configure(SimConfig.model_validate({**current, **knobs}))


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve the fault-injecting simulator.")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--config", default="{}", help="SimConfig as JSON")
    args = parser.parse_args()
    config = SimConfig.model_validate_json(args.config)
    # Loopback only: the simulator is a test double, never a service.
    uvicorn.run(Simulator(config), host="127.0.0.1", port=args.port, log_level="warning",
                lifespan="off", access_log=False)


if __name__ == "__main__":
    main()
