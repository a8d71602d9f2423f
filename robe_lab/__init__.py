"""robe-lab's neutral ground: the ``robe-lab`` command, where data lives, and help formatting.

Named after the distribution (``robe-lab`` installs the import package ``robe_lab``): it sits beside
``robe/`` (the endpoints), ``topologies/``, ``experiments/`` and ``analysis/`` and may import them,
while the modules it holds for them (``paths``, ``cliparse``) import none of them, so any of those
packages can use it without depending on another.
"""
