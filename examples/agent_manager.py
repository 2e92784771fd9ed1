"""The seeds' sandbox manager, ported: one sandbox per user and project, code run with a timeout, its output returned,
idle and old sandboxes removed by themselves. No singleton, per-user locks, dict, Redis or cleanup loop: the API
server's "already exists" is the lock, the Sandbox objects are the registry, and the operator expires them.

    python examples/agent_manager.py USER PROJECT "print('hello')"
"""

import asyncio
import sys

from sandbox_operator.sdk import CommandResult, Sandbox, SandboxClient

IDLE_TIMEOUT = 500  # seconds without a command or file operation
MAX_SANDBOX_AGE = 900  # seconds from creation, activity or not


class AgentSandboxes:
    """What an agent platform needs: the caller's sandbox, code run in it, files in and out."""

    def __init__(self, client: SandboxClient) -> None:
        self.client = client

    async def get_sandbox(self, user_id: str, project_id: str) -> Sandbox:
        """The user's sandbox for this project: the one that exists, or a new one (any number of callers at once)."""
        return await self.client.get_or_create(
            {"user": user_id, "project": project_id},
            image="python:3.11-slim", cpu="1", memory="512Mi", idle_timeout=IDLE_TIMEOUT, ttl=MAX_SANDBOX_AGE,
        )

    async def run_code(self, user_id: str, project_id: str, code: str, timeout: float = 30) -> CommandResult:
        """Run Python code; at the timeout everything it started is killed. Output is capped at 64 KiB a stream."""
        sandbox = await self.get_sandbox(user_id, project_id)
        return await sandbox.run(["python3", "-c", code], timeout=timeout, max_output_bytes=64 * 1024, cwd="/tmp")

    async def save_file(self, user_id: str, project_id: str, path: str, data: bytes) -> None:
        await (await self.get_sandbox(user_id, project_id)).files.write(path, data)

    async def load_file(self, user_id: str, project_id: str, path: str) -> bytes:
        return await (await self.get_sandbox(user_id, project_id)).files.read(path)


async def main(user_id: str, project_id: str, code: str) -> int:
    async with await SandboxClient.connect() as client:  # the caller's kubeconfig or service account
        result = await AgentSandboxes(client).run_code(user_id, project_id, code)
        sys.stdout.write(result.text)
        sys.stderr.write(result.error_text)
        return 124 if result.timed_out else result.exit_code


if __name__ == "__main__":
    sys.exit(asyncio.run(main(*sys.argv[1:4])))
