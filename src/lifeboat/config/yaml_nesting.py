"""A YAML loader for the files lifeboat reads that refuses documents nested too deep."""

from __future__ import annotations

import yaml

# lifeboat's config, a kubeadm static-pod manifest and an EncryptionConfiguration nest a few
# levels; PyYAML composes a document recursively, so a few KiB of brackets nested thousands
# deep exhaust Python's recursion limit (an unexpected error instead of "not valid YAML").
MAX_NESTING = 100


class NestingLimitedLoader(yaml.SafeLoader):
    """SafeLoader that refuses a document nested more than ``MAX_NESTING`` levels deep."""

    _depth = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        if self._depth >= MAX_NESTING:
            mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
            raise yaml.composer.ComposerError(
                None, None, f"lists or mappings are nested more than {MAX_NESTING} levels deep", mark,
            )
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1
