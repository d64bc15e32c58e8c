"""The reloader's revisions when several workers share one store and one file."""

from __future__ import annotations

import json
from pathlib import Path

from router.live.reload import Reloader
from router.outcomes import MemoryStore
from router.serving.model import ServedModel
from router.serving.registry import ENGINES_UNCHOSEN, ModelRegistry
from tests.configs import write_config


class SlowStartRegistry(ModelRegistry):
    """A registry whose first load lets something happen meanwhile: a worker that is still
    loading its models on a busy machine while the file is saved and another worker applies
    the new content."""

    def __init__(self, meanwhile: object) -> None:
        super().__init__(engines=ENGINES_UNCHOSEN)
        self.meanwhile = meanwhile
        self.loads = 0

    def load(self, path: str | Path, model_roots: tuple[Path, ...] = ()) -> ServedModel:
        self.loads += 1
        if self.loads == 1:
            self.meanwhile()  # type: ignore[operator]
        return super().load(path, model_roots)


def test_a_worker_that_read_the_file_before_a_save_does_not_register_the_old_content(
        tmp_path: Path, champion_dir: Path, challenger_dir: Path) -> None:
    """Worker B reads the file at 10 %, and while it loads its models the file is saved at
    40 % and worker A registers that as revision 2. B then serves revision 2 too: the 10 % it
    read first never comes back as revision 3."""
    path = write_config(tmp_path, champion=champion_dir, challenger=challenger_dir,
                        traffic={"challenger_percent": 10})
    store = MemoryStore()
    first = Reloader(path, tmp_path, ModelRegistry(engines=ENGINES_UNCHOSEN), store)
    assert first.start().revision == 1

    def save_and_apply_elsewhere() -> None:
        config = json.loads(path.read_text())
        config["traffic"]["challenger_percent"] = 40
        path.write_text(json.dumps(config))
        assert first.reload().revision == 2

    second = Reloader(path, tmp_path, SlowStartRegistry(save_and_apply_elsewhere), store)
    snapshot = second.start()
    assert (snapshot.revision, snapshot.config.traffic.challenger_percent) == (2, 40)
    assert [r.revision for r in store.revisions("exp")] == [1, 2]
