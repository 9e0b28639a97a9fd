"""Tandem's shared vocabulary: the words `infra/`, `ml/` and `deploy/` all use.

Standard library only, and it imports nothing of theirs, so each side may import it:

- `naming`   the naming rules (model names, name prefixes, e-mail addresses)
- `outputs`  the stack output keys per cloud: what a program exports, what an adapter reads
- `layout`   the artifact store's layout: prefixes and key builders
- `metrics`  Tandem's metric namespace, names and dimensions
- `serving`  what an endpoint is told through its environment, and the live alias
- `privacy`  the keyed pseudonym that stands in for personal data
- `emulators` the loopback hosts and Azurite's public development account

A word written here is written nowhere else.
"""
