"""What a machine needs to run robe-lab, and the proof that the README's set-up provides it.

``packages``: the Debian package list that ``scripts/setup.sh`` installs, and a scan of the code for
the programs it runs; ``rootfs``: a cached minimal Debian 12 root (debootstrap); ``container``: one
run in a throw-away overlay of it under systemd-nspawn; ``fresh_check``: ``make fresh-check``.
"""
