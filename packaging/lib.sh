# shellcheck shell=bash
# Shell functions shared by packaging/build-deb and packaging/build-rpm (sourced, not run).

# A sane environment: a package build must not pick up pyenv's or a venv's python3
# (the rados/rbd bindings exist only for Debian's /usr/bin/python3), nor the caller's
# PYTHONPATH, nor a locale that changes tools' output.
packaging_env() {
    export PATH=/usr/sbin:/usr/bin:/sbin:/bin
    export LC_ALL=C.UTF-8
    export PYTHONDONTWRITEBYTECODE=1
    unset PYTHONPATH PYTHONHOME PYTHONSTARTUP VIRTUAL_ENV
}

# snapshot TOP DEST: copy the source tree TOP to DEST as it is in the working tree,
# uncommitted and untracked changes included (so they can be tested before a commit),
# without what .gitignore ignores (build outputs, packaging/out, __pycache__, .pytest_cache)
# and without .git. Outside a git checkout (an unpacked tarball): everything but the same
# build outputs.
snapshot() {
    local top=$1 dest=$2
    mkdir -p "$dest"
    if git -C "$top" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
        (cd "$top" && git ls-files -z --cached --others --exclude-standard) |
            while IFS= read -r -d '' f; do
                # a tracked file deleted in the working tree is not part of the snapshot
                if [ -e "$top/$f" ] || [ -L "$top/$f" ]; then printf '%s\0' "$f"; fi
            done |
            tar -C "$top" --null --no-recursion -T - -cf - | tar -C "$dest" -xf -
    else
        tar -C "$top" --exclude=./.git --exclude=./packaging/out --exclude=./build \
            --exclude=./dist --exclude=./.venv --exclude=__pycache__ --exclude='*.pyc' \
            --exclude=.pytest_cache --exclude='*.egg-info' -cf - . | tar -C "$dest" -xf -
    fi
    [ -f "$dest/lib/vmceph/__init__.py" ] || { echo "snapshot of $top has no lib/vmceph" >&2; return 1; }
}

# describe TOP: "git 7b76336" / "git 7b76336 with uncommitted changes" / "a source tree".
describe() {
    local top=$1 rev
    if rev=$(git -C "$top" rev-parse --short HEAD 2>/dev/null); then
        if [ -n "$(git -C "$top" status --porcelain --untracked-files=normal 2>/dev/null)" ]; then
            echo "git $rev with uncommitted changes"
        else
            echo "git $rev"
        fi
    else
        echo "a source tree without git"
    fi
}

# build_date_epoch TOP: the commit time of HEAD for a clean tree (reproducible builds),
# now otherwise.
build_date_epoch() {
    local top=$1
    if git -C "$top" rev-parse HEAD >/dev/null 2>&1 &&
        [ -z "$(git -C "$top" status --porcelain 2>/dev/null)" ]; then
        git -C "$top" log -1 --format=%ct HEAD
    else
        date +%s
    fi
}

elapsed() {  # elapsed START_EPOCH -> "12 s"
    echo "$(( $(date +%s) - $1 )) s"
}
