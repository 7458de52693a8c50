"""What a command line printed for its user, without the XLA runtime's own log lines."""

import re

# absl/XLA log lines, e.g. "W1129 09:53:41.405977   17448 pjrt_executable.cc:642] Assume version ..."
# (printed by the C++ runtime, e.g. when an executable comes from the persistent compilation cache).
_RUNTIME_LOG_LINE = re.compile(r"^[IWEF]\d{4} \d{2}:\d{2}:\d{2}\.\d+\s+\d+ \S+:\d+\] ")
_RUNTIME_PREAMBLE = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"


def user_message(stderr: str) -> str:
    """Returns `stderr` without the runtime's log lines, so a test can check what the user is told first."""
    lines = stderr.splitlines(keepends=True)
    return "".join(line for line in lines
                   if not _RUNTIME_LOG_LINE.match(line) and not line.startswith(_RUNTIME_PREAMBLE))
