"""The shell scripts the SDK runs in a sandbox: all it needs there is a POSIX shell (dash or busybox ash) with the
usual tools (setsid, cat, stat, mkdir, mv, rm, tar, kill, sleep).

Each is run as ``sh -c SCRIPT <name> ARGS...``: values only ever arrive as positional parameters, never pasted into
the script, so no path, argument or environment value is interpreted by the shell. A script that refuses reports
``\\036sandbox-error <ERRNO NAME> [detail]`` as the first line of stderr and exits with ERROR_EXIT.

Scripts that may be given stdin read it to its end before they exit (DRAIN). The container runtime stops reading an
exec's stdin once the process's pipe is full and sends no exit status until it has all of it, so a command that
ends without reading its input (or a script refusing a write) would otherwise never be reported as ended.
"""

from __future__ import annotations

from typing import Final

ERROR_EXIT: Final = 125
PGID_MARKER: Final = b"\x1esandbox-pgid "
ERROR_MARKER: Final = b"\x1esandbox-error "
DRAIN: Final = "trap 'cat >/dev/null 2>&1' EXIT\n"

# run: TIMEOUT CWD K=V... -- ARGV...
# The command runs in a session (and so a process group) of its own, whose id is printed first on stderr; the
# environment is exported there, after the wrapper's own variables are read (a name like `t` changes nothing). A
# watchdog outside that group kills the whole group at the timeout (0: none); when the command ends, whatever it left
# running in its group is killed too. So nothing it started keeps running, even if the client has gone away, and its
# output streams end with it. The exit status is the command's (137 when the watchdog killed it).
RUN: Final = (
    DRAIN
    + r"""t=$1 d=$2; shift 2
if [ -n "$d" ]; then
  cd -- "$d" 2>/dev/null || { if [ -e "$d" ]; then e=ENOTDIR; else e=ENOENT; fi; [ -d "$d" ] && e=EACCES
    printf '\036sandbox-error %s cwd\n' "$e" >&2; exit 125; }
fi
command -v setsid >/dev/null 2>&1 || { printf '\036sandbox-error ENOEXEC setsid is missing\n' >&2; exit 125; }
exec 3<&0
setsid sh -c 'printf "\036sandbox-pgid %s\n" "$$" >&2
while [ "$1" != -- ]; do export "$1"; shift; done; shift; exec "$@"' sandbox-run "$@" <&3 3<&- &
p=$!
exec 3<&-
w=
if [ "$t" != 0 ]; then
  (trap 'kill "$s" 2>/dev/null; exit 0' TERM; sleep "$t" & s=$!; wait "$s" && kill -s KILL -- "-$p") \
    </dev/null >/dev/null 2>&1 &
  w=$!
fi
wait "$p" 2>/dev/null; rc=$?
if [ -n "$w" ]; then kill "$w" 2>/dev/null; fi
kill -s KILL -- "-$p" 2>/dev/null
exit "$rc"
"""
)

# signal: SIGNAL PGID -- send a signal to a command's process group.
SIGNAL: Final = r"""kill -s "$1" -- "-$2" 2>/dev/null || true"""

# write: PATH MAKE_DIRS -- stdin becomes the file, atomically (a temporary file beside it, then a rename).
WRITE: Final = (
    DRAIN
    + r"""p=$1
if [ -d "$p" ]; then printf '\036sandbox-error EISDIR\n' >&2; exit 125; fi
if [ "$2" = 1 ]; then mkdir -p -- "$(dirname -- "$p")" || exit 1; fi
t="$p.sandbox-upload.$$"
cat > "$t" || { rm -f -- "$t"; exit 1; }
mv -f -- "$t" "$p" || { rm -f -- "$t"; exit 1; }
"""
)

# read: PATH MAX_BYTES -- the file on stdout, refused before reading when it is larger than MAX_BYTES.
READ: Final = r"""p=$1
if [ ! -e "$p" ]; then printf '\036sandbox-error ENOENT\n' >&2; exit 125; fi
if [ -d "$p" ]; then printf '\036sandbox-error EISDIR\n' >&2; exit 125; fi
if [ ! -f "$p" ]; then printf '\036sandbox-error EINVAL not a regular file\n' >&2; exit 125; fi
if [ ! -r "$p" ]; then printf '\036sandbox-error EACCES\n' >&2; exit 125; fi
s=$(stat -L -c %s -- "$p") || exit 1
if [ "$s" -gt "$2" ]; then printf '\036sandbox-error EFBIG %s\n' "$s" >&2; exit 125; fi
exec cat -- "$p"
"""

# list: PATH -- the entries' names, NUL-terminated, then a NUL, then one "SIZE MTIME TYPE" line per entry, in order.
LIST: Final = r"""d=$1
if [ ! -e "$d" ]; then printf '\036sandbox-error ENOENT\n' >&2; exit 125; fi
if [ ! -d "$d" ]; then printf '\036sandbox-error ENOTDIR\n' >&2; exit 125; fi
cd -- "$d" 2>/dev/null || { printf '\036sandbox-error EACCES\n' >&2; exit 125; }
set --
for f in * .[!.]* ..?*; do if [ -e "$f" ] || [ -L "$f" ]; then set -- "$@" "$f"; fi; done
if [ $# -eq 0 ]; then exit 0; fi
printf '%s\000' "$@"
printf '\000'
exec stat -c '%s %Y %F' -- "$@"
"""

# remove: PATH RECURSIVE -- a file, an empty directory, or (RECURSIVE=1) a whole tree.
REMOVE: Final = r"""p=$1
case "$p" in /|//|/.|/..) printf '\036sandbox-error EPERM the root directory\n' >&2; exit 125;; esac
if [ ! -e "$p" ] && [ ! -L "$p" ]; then printf '\036sandbox-error ENOENT\n' >&2; exit 125; fi
if [ -d "$p" ] && [ ! -L "$p" ]; then
  if [ "$2" = 1 ]; then exec rm -rf -- "$p"; else exec rmdir -- "$p"; fi
fi
exec rm -f -- "$p"
"""

# untar: DIR -- a tar archive on stdin is unpacked into DIR (created if missing).
UNTAR: Final = (
    DRAIN
    + r"""mkdir -p -- "$1" || exit 1
cd -- "$1" || exit 1
tar -x -f -
"""
)

# tar: PATH -- PATH (a file or a directory tree) as a tar archive on stdout, named by its last component.
TAR: Final = r"""p=$1
if [ ! -e "$p" ]; then printf '\036sandbox-error ENOENT\n' >&2; exit 125; fi
cd -- "$(dirname -- "$p")" || exit 1
exec tar -c -f - -- "$(basename -- "$p")"
"""


def argv(script: str, name: str, *args: str) -> list[str]:
    """The exec argv running ``script`` with ``args`` as its positional parameters."""
    return ["sh", "-c", script, name, *args]
