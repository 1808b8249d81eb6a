"""YAML as spotsweep reads it: plain values only, and a key given twice in one mapping is an error.

PyYAML's SafeLoader keeps the last of two equal keys without a word, so `batch_size: [8, 16]` above a
forgotten `batch_size: 128` would silently sweep one value. Sweep files, cluster profiles and Dask
cluster options are all read here.
"""

from __future__ import annotations

from typing import Any

import yaml


class DuplicateKey(yaml.constructor.ConstructorError):
    """A mapping that names one key twice; `key` and `line` (1-based) say where."""

    def __init__(self, key: object, line: int) -> None:
        super().__init__(problem=f"the key '{key}' is given twice")
        self.key, self.line = key, line


class UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a duplicate key (merge keys, `<<`, may still be overridden)."""


def _mapping(loader: UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=deep)
        try:
            duplicate = key in seen
        except TypeError:  # an unhashable key: SafeLoader's own error follows
            continue
        if duplicate:
            raise DuplicateKey(key, key_node.start_mark.line + 1)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def load(text: str) -> Any:
    """The plain values of a YAML document; DuplicateKey for a key given twice, yaml.YAMLError otherwise."""
    return yaml.load(text, Loader=UniqueKeyLoader)  # a SafeLoader: plain values only
