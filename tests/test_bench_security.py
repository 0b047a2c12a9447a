"""The security bench's generator: its ground truth must be exact, or every figure is wrong."""

from __future__ import annotations

import base64
import json
import sys
from collections import Counter
from urllib.parse import unquote

from tests.conftest import CORPUS, REPO

sys.path.insert(0, str(REPO / "benchmarks"))
import gen_secrets as gen


def _field(record: object, path: str) -> str:
    matches = [t for p, t in gen.strings(record) if gen.dotted(p) == path]
    assert len(matches) == 1, path
    return matches[0]


def _decoded(inst: gen.Instance) -> list[str]:
    """The pieces with the encodings the generator applied undone."""
    levels = (inst.context == "json_input") + (inst.encoding == "json")
    out = []
    for piece in (p for _, _, p in inst.pieces):
        for _ in range(levels):
            piece = json.loads(f'"{piece}"')
        out.append(unquote(piece) if inst.encoding == "url" else piece)
    return out


def test_every_planted_value_is_in_its_field_in_the_encoding_it_says() -> None:
    data = gen.generate(seed=7, reps=1, negatives=2, corpus=CORPUS)
    wanted = {(i.source, i.path) for i in data.instances}
    sources = {(rid, gen.dotted(p)): t for rid, record in gen.corpus_records(CORPUS)
               for p, t in gen.strings(record) if (rid, gen.dotted(p)) in wanted}
    assert len(gen.FAMILIES) >= 30
    assert len(data.instances) == len(gen.FAMILIES) * len(gen.CONTEXTS) * len(gen.ENCODINGS)
    assert Counter(i.encoding for i in data.instances).keys() == set(gen.ENCODINGS)
    for inst in data.instances:
        record = data.records[inst.record]
        text = _field(record, inst.path)
        assert inst.pieces, inst
        for start, end, piece in inst.pieces:
            assert text[start:end] == piece, (inst.family, inst.context, inst.encoding)
        pieces = _decoded(inst)
        flat = inst.secret.replace("\n", "")
        if inst.encoding == "base64":
            (run,) = pieces
            assert inst.secret in base64.b64decode(run).decode(), inst
        else:
            assert "".join(p.replace("\n", "") for p in pieces) == flat, inst
        if inst.encoding == "split" and len(inst.pieces) == 2:  # cut by a newline
            gap = text[inst.pieces[0][1]:inst.pieces[1][0]]
            assert gap.replace("+", "") in ("\n", "\\n", "\\\\n"), (inst, gap)
        if inst.encoding == "raw" and inst.context not in ("diff", "json_input"):
            assert text.count(inst.secret) == 1, inst
        if inst.encoding in ("base64", "split"):  # the raw form is hidden
            assert inst.secret not in text, inst
        # around the inserted text, the field is the real corpus line's, untouched
        pos, length = inst.inserted
        assert pos <= inst.pieces[0][0] and inst.pieces[-1][1] <= pos + length
        assert text[:pos] + text[pos + length:] == sources[(inst.source, inst.path)]
    for inst in data.negative_instances:
        text = _field(data.negatives[inst.record], inst.path)
        ((start, end, snippet),) = inst.pieces
        assert text[start:end] == snippet == inst.secret


def test_the_same_seed_gives_the_same_instances_and_another_seed_other_ones() -> None:
    def truth(seed: int) -> list[tuple[str, str, list[tuple[int, int, str]]]]:
        data = gen.generate(seed=seed, reps=1, negatives=1, corpus=CORPUS,
                            families=["github-pat", "pem-openssh", "conn-mongodb"])
        return [(i.source, i.path, i.pieces) for i in data.instances]

    assert truth(3) == truth(3)
    assert truth(3) != truth(4)


def test_tokens_have_their_family_shape() -> None:
    rng = gen.random.Random(1)
    hf = gen.FAMILIES["huggingface"](rng).secret
    assert hf.startswith("hf_") and hf[3:].isalpha() and len(hf) == 37
    key_id = gen.FAMILIES["aws-access-key-id"](rng).secret
    assert key_id.startswith("AKIA") and len(key_id) == 20 and key_id.isupper()
    pem = gen.FAMILIES["pem-rsa"](rng)
    assert pem.text.startswith("-----BEGIN RSA PRIVATE KEY-----\n") and pem.secret in pem.text
    auth = gen.FAMILIES["docker-auths"](rng).secret
    assert base64.b64decode(auth).decode().startswith("ci-bot:")
