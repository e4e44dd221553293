# Sourced by the scripts that install Debian packages (tests/i386/setup.sh,
# tests/hwkvm/check.sh): runs a command as root, directly or through
# password-less sudo, or says what it needed and fails.
as_root() {
    if [ "$(id -u)" = 0 ]; then
        "$@"
    elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
        sudo -n "$@"
    else
        echo "$(basename "$0"): needs root to run: $*" >&2
        return 1
    fi
}
