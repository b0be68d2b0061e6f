#!/usr/bin/env bash
# Install botmeter as a systemd service beside Asterisk, or bring an install up to date.
#
#   deploy/install.sh [--dry-run] [--source DIR] [--python PYTHON] [--ami-secret FILE]
#
# What it does (each step only where needed, so running it again is safe):
#   - the system user `botmeter` (and group), a member of group `asterisk` where it exists
#   - a virtual environment in /opt/botmeter/venv with botmeter installed from DIR
#     (default: the repository this script sits in), on PYTHON (default: /usr/bin/python3;
#     3.11 or later, not one in a home directory such as pyenv's)
#   - /etc/botmeter (root:botmeter 0750): the example botmeter.toml and plans/ (0640) where
#     none exist yet (an existing file is kept, its owner and mode made safe); secrets
#     (ami.secret, uplink.token, uplink.key) root's alone, 0600: systemd passes them to the
#     service as credentials
#   - the units botmeter.service, botmeter-report.service and .timer, `systemctl
#     daemon-reload`, then `systemctl enable --now` (once /etc/botmeter/ami.secret exists;
#     an agent that was running is restarted on the new version)
# --dry-run prints every command it would run, changes nothing, and needs no root.
set -euo pipefail

readonly USER_NAME=botmeter
readonly PREFIX=/opt/botmeter
readonly VENV=$PREFIX/venv
readonly ETC=/etc/botmeter
readonly UNIT_DIR=/etc/systemd/system
readonly DOC_DIR=/usr/share/doc/botmeter
readonly UNITS=(botmeter.service botmeter-report.service botmeter-report.timer)
readonly SECRETS=(ami.secret uplink.token uplink.key)

dry_run=0
source_dir=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
python=/usr/bin/python3  # the system's: a service cannot run a Python in a home directory
[[ -x $python ]] || python=python3
ami_secret=

usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
}

die() {
    printf 'install.sh: %s\n' "$*" >&2
    exit "${code:-1}"
}

# Run a command, or only print it with --dry-run; every change goes through here.
run() {
    local word line=
    for word in "$@"; do
        line+=" $(printf '%q' "$word")"
    done
    printf '+%s\n' "$line"
    if (( ! dry_run )); then
        "$@"
    fi
}

# Say why a step is skipped.
note() {
    printf '# %s\n' "$*"
}

parse_args() {
    while (( $# )); do
        case $1 in
            --dry-run) dry_run=1 ;;
            --source) (( $# > 1 )) || code=2 die "--source needs a directory"
                      source_dir=$2; shift ;;
            --python) (( $# > 1 )) || code=2 die "--python needs a command"
                      python=$2; shift ;;
            --ami-secret) (( $# > 1 )) || code=2 die "--ami-secret needs a file"
                          ami_secret=$2; shift ;;
            -h|--help) usage; exit 0 ;;
            *) code=2 die "unknown option: $1 (see --help)" ;;
        esac
        shift
    done
}

preflight() {
    if (( ! dry_run )) && (( EUID != 0 )); then
        die "run it as root (or with --dry-run to see what it would do)"
    fi
    [[ -f $source_dir/pyproject.toml && -d $source_dir/agent/botmeter ]] \
        || die "$source_dir: not a botmeter source tree (no pyproject.toml, agent/botmeter)"
    command -v "$python" >/dev/null || die "$python: not found (botmeter needs Python 3.11+)"
    "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
        || die "$python: Python 3.11 or later is needed"
    if [[ ! -x $VENV/bin/python ]] && ! "$python" -c 'import ensurepip, venv' 2>/dev/null; then
        die "$python: cannot make a virtual environment (no venv/ensurepip module): on" \
            "Debian and Ubuntu, apt-get install python3-venv"
    fi
    local base
    base=$("$python" -c 'import sys; print(sys.base_prefix)')
    case $base/ in
        /root/*|/home/*|/run/user/*)
            die "$python: installed in $base, a home directory, which the service cannot" \
                "see (ProtectHome=): give --python /usr/bin/python3 or another system Python" ;;
    esac
    if [[ -n $ami_secret && ! -s $ami_secret ]]; then
        die "$ami_secret: no such file, or empty (--ami-secret FILE holds the AMI secret)"
    fi
    if (( ! dry_run )); then
        command -v systemctl >/dev/null || die "systemctl: not found (this needs systemd)"
    fi
}

install_user() {
    if getent passwd "$USER_NAME" >/dev/null; then
        note "user $USER_NAME exists"
    else
        run useradd --system --user-group --home-dir /var/lib/botmeter --no-create-home \
            --shell /usr/sbin/nologin --comment "botmeter voice bot usage meter" "$USER_NAME"
    fi
    if ! getent group asterisk >/dev/null; then
        note "no group asterisk: $USER_NAME joins none"
    elif id -nG "$USER_NAME" 2>/dev/null | tr ' ' '\n' | grep -qx asterisk; then
        note "user $USER_NAME is in group asterisk"
    else
        run usermod --append --groups asterisk "$USER_NAME"
    fi
}

install_venv() {
    run install -d -m 0755 -o root -g root "$PREFIX"
    if [[ -x $VENV/bin/python ]]; then
        note "virtual environment $VENV exists"
    else
        run "$python" -m venv "$VENV"
    fi
    run "$VENV/bin/pip" install --quiet --disable-pip-version-check --upgrade "$source_dir"
}

# Install FILE as TARGET with MODE and OWNER:GROUP unless TARGET exists; an existing TARGET
# is kept as the admin left it, with its owner and mode made safe.
install_kept() {
    local mode=$1 owner=$2 file=$3 target=$4
    if [[ -e $target ]]; then
        note "$target exists: kept"
        run chown "$owner" "$target"
        run chmod "$mode" "$target"
    else
        run install -m "$mode" -o "${owner%:*}" -g "${owner#*:}" "$file" "$target"
    fi
}

install_config() {
    local plan name secret
    run install -d -m 0750 -o root -g "$USER_NAME" "$ETC" "$ETC/plans"
    install_kept 0640 "root:$USER_NAME" "$source_dir/config/botmeter.toml" "$ETC/botmeter.toml"
    for plan in "$source_dir"/config/plans/*.toml; do
        name=$(basename -- "$plan")
        install_kept 0640 "root:$USER_NAME" "$plan" "$ETC/plans/$name"
    done
    if [[ -n $ami_secret ]]; then
        run install -m 0600 -o root -g root "$ami_secret" "$ETC/ami.secret"
    fi
    for secret in "${SECRETS[@]}"; do
        if [[ -e $ETC/$secret ]]; then
            run chown root:root "$ETC/$secret"
            run chmod 0600 "$ETC/$secret"
        fi
    done
}

install_units() {
    local unit
    for unit in "${UNITS[@]}"; do
        run install -m 0644 -o root -g root "$source_dir/deploy/systemd/$unit" "$UNIT_DIR/$unit"
    done
    run install -d -m 0755 "$DOC_DIR" "$DOC_DIR/docs"
    run install -m 0644 "$source_dir/README.md" "$DOC_DIR/README.md"
    run install -m 0644 "$source_dir"/docs/*.md "$DOC_DIR/docs/"
    run systemctl daemon-reload
}

start_service() {
    local was_active
    if [[ ! -e $ETC/ami.secret && -z $ami_secret ]]; then
        note "no $ETC/ami.secret yet: botmeter is not started. Write the AMI secret, then:"
        note "  install -m 0600 /dev/stdin $ETC/ami.secret <<< 'the-secret'"
        note "  systemctl enable --now botmeter.service botmeter-report.timer"
        return
    fi
    was_active=$(systemctl is-active botmeter.service 2>/dev/null || true)
    if ! run systemctl enable --now botmeter.service botmeter-report.timer; then
        die "botmeter did not become ready: see systemctl status botmeter, journalctl -u botmeter"
    fi
    if [[ $was_active == active ]]; then
        run systemctl restart botmeter.service
    fi
}

main() {
    parse_args "$@"
    preflight
    if (( dry_run )); then
        note "dry run: nothing is changed; these are the commands an install would run"
    fi
    install_user
    install_venv
    install_config
    install_units
    start_service
    note "done: systemctl status botmeter; journalctl -u botmeter -f; edit $ETC/botmeter.toml"
}

main "$@"
