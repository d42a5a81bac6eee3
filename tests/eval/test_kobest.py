"""KoBEST files: the shipped dev/test TSVs read by header name (CRLF, QUOTE_NONE, per-split columns);
a missing column, an unknown label or a short row is one UserError naming the file; few-shot
draws and macro-F1 as lm-eval makes them."""

from __future__ import annotations

import random

import pytest

from kopretrain.config.eval import KOBEST_TASKS, KobestConfig
from kopretrain.errors import ConfigError, UserError
from kopretrain.eval.kobest import contexts, doc_to_choice, doc_to_text, encode_pair, macro_f1, task_requests
from kopretrain.eval.kobest_data import read_task

COUNTS = {"BoolQ": (700, 1404), "COPA": (500, 1000), "HellaSwag": (500, 500), "SentiNeg": (400, 397), "WiC": (610, 1260)}


@pytest.mark.parametrize("task", KOBEST_TASKS)
def test_shipped_splits_read_whole_with_valid_labels(repo_root, task):
    for split, n in zip(("dev", "test"), COUNTS[task]):
        docs = read_task(repo_root / "data/kobest", task, split)
        assert len(docs) == n
        num_choices = len(doc_to_choice(task, docs[0]))
        assert {d["label"] for d in docs} == set(range(num_choices))
        assert all("\r" not in v for d in docs for v in d.values() if isinstance(v, str))
        assert all(doc_to_text(task, d) for d in docs)


def test_sentineg_test_split_uses_its_own_columns(repo_root):
    """The test split has Label_origin/Text_origin before Label/Text: the columns are found by name."""
    header = (repo_root / "data/kobest/SentiNeg/test.tsv").read_text(encoding="utf-8").splitlines()[0].split("\t")
    assert header.index("Text") != 2
    doc = read_task(repo_root / "data/kobest", "SentiNeg", "test", limit=1)[0]
    assert doc == {"sentence": "택배사 정말 마음에 듬", "label": 1}  # not Text_origin, Label_origin (0)


def _write(tmp_path, task, text) -> str:
    (tmp_path / task).mkdir(parents=True, exist_ok=True)
    (tmp_path / task / "test.tsv").write_bytes(text.encode("utf-8"))
    return str(tmp_path)


def test_a_missing_column_names_the_file(tmp_path):
    d = _write(tmp_path, "COPA", "ID\tsentence\tquestion\t1\tAnswer\r\n1\t문장\t원인\t가\t1\r\n")
    with pytest.raises(UserError, match=rf"^kobest: {tmp_path}/COPA/test.tsv has no column '2' \(header: ID, sentence"):
        read_task(d, "COPA", "test")


def test_an_unknown_label_names_the_file_and_line(tmp_path):
    d = _write(tmp_path, "BoolQ", "ID\tText\tQuestion\tAnswer\r\n1\t글\t질문\tTrue\r\n2\t글\t질문\tmaybe\r\n")
    with pytest.raises(UserError, match=rf"^kobest: {tmp_path}/BoolQ/test.tsv line 3: unknown label 'maybe' in column 'Answer'"):
        read_task(d, "BoolQ", "test")
    d = _write(tmp_path, "COPA", "ID\tsentence\tquestion\t1\t2\tAnswer\r\n1\t문장\t이유\t가\t나\t1\r\n")
    with pytest.raises(UserError, match=r"COPA/test.tsv line 2: unknown question '이유'"):
        read_task(d, "COPA", "test")


def test_a_short_row_and_a_missing_file_are_one_line(tmp_path):
    d = _write(tmp_path, "SentiNeg", "ID\tLabel\tText\r\n1\t1\r\n")
    with pytest.raises(UserError, match=r"SentiNeg/test.tsv line 2: 2 fields, the header has 3$"):
        read_task(d, "SentiNeg", "test")
    with pytest.raises(UserError, match=r"^kobest: WiC test split not found: "):
        read_task(d, "WiC", "test")


def test_quotes_are_text_not_quoting(tmp_path):
    d = _write(tmp_path, "SentiNeg", 'ID\tLabel\tText\r\n1\t0\t"따옴표\r\n2\t1\t그는 "좋다"고 했다\r\n')
    assert [x["sentence"] for x in read_task(d, "SentiNeg", "test")] == ['"따옴표', '그는 "좋다"고 했다']


def test_a_utf8_bom_is_dropped_and_a_bad_byte_is_located_in_the_file(tmp_path):
    d = _write(tmp_path, "HellaSwag", "\ufeffcontext\tchoice1\tchoice2\tchoice3\tchoice4\tlabel\r\n문맥\t가\t나\t다\t라\t3\r\n")
    assert read_task(d, "HellaSwag", "test")[0]["context"] == "문맥"
    good = "ID\tLabel\tText\r\n" + "".join(f"{i}\t1\t{'가' * 3000}\r\n" for i in range(10))
    (tmp_path / "SentiNeg").mkdir()
    (tmp_path / "SentiNeg" / "test.tsv").write_bytes(good.encode("utf-8") + b"\xff\r\n")
    with pytest.raises(UserError, match=rf"^kobest: {tmp_path}/SentiNeg/test.tsv is not UTF-8 \(invalid start byte at byte {len(good.encode())}\)$"):
        read_task(d, "SentiNeg", "test")


def test_an_empty_cell_names_the_file_line_and_column(tmp_path):
    """An empty COPA alternative would be scored over no tokens (0 nats) and always be predicted."""
    d = _write(tmp_path, "COPA", "ID\tsentence\tquestion\t1\t2\tAnswer\r\n1\t문장\t원인\t가\t나\t1\r\n2\t문장\t결과\t가\t \t2\r\n")
    with pytest.raises(UserError, match=rf"^kobest: {tmp_path}/COPA/test.tsv line 3: empty column '2'$"):
        read_task(d, "COPA", "test")


def test_config_rejects_unknown_tasks_and_splits():
    with pytest.raises(ConfigError, match=r"^tasks"):
        KobestConfig(tasks=["KoBoolQ"])
    with pytest.raises(ConfigError, match=r"^split"):
        KobestConfig(split="train")


def test_tasks_are_taken_in_any_case_as_the_train_key_is():
    """kobest.tasks=[copa, BOOLQ] is COPA and BoolQ (as train's eval.kobest_tasks); [COPA, copa] is a task twice."""
    assert KobestConfig(tasks=["copa", "BOOLQ", "hellaswag"]).tasks == ["COPA", "BoolQ", "HellaSwag"]
    with pytest.raises(ConfigError, match=r"^tasks: \['COPA', 'COPA'\] names a task twice$"):
        KobestConfig(tasks=["COPA", "copa"])
    with pytest.raises(ConfigError, match=r"^tasks: 'nope' is not one of BoolQ, COPA"):
        KobestConfig(tasks=["nope"])


def test_too_many_fewshot_examples_says_how_many_there_are_and_are_needed(repo_root):
    """COPA's dev split has 500 items; scoring dev, an item is not its own example: 499 to draw from."""
    with pytest.raises(UserError, match=r"^kobest\.num_fewshot=500: the COPA dev split has 499 examples to draw from, "
                                        r"500 needed \(scoring the dev split, an item is not its own example\)$"):
        task_requests(None, "COPA", KobestConfig(data_dir=str(repo_root / "data/kobest"), split="dev", num_fewshot=500, limit=1))
    with pytest.raises(UserError, match=r"^kobest\.num_fewshot=501: the COPA dev split has 500 examples to draw from, 501 needed$"):
        task_requests(None, "COPA", KobestConfig(data_dir=str(repo_root / "data/kobest"), split="test", num_fewshot=501, limit=1))


def test_fewshot_draw_is_seeded_from_dev_and_never_the_item_itself(repo_root):
    dev = read_task(repo_root / "data/kobest", "COPA", "dev")
    a = contexts("COPA", dev[:20], dev, 3, seed=7, same_split=True)
    assert a == contexts("COPA", dev[:20], dev, 3, seed=7, same_split=True)
    assert a != contexts("COPA", dev[:20], dev, 3, seed=8, same_split=True)
    for doc, prompt in zip(dev[:20], a):
        shots = prompt.split("\n\n")
        assert len(shots) == 4 and shots[-1] == doc_to_text("COPA", doc)
        assert doc_to_text("COPA", doc) not in shots[:-1]
    rnd = random.Random(7)
    first = rnd.sample(dev, 3)  # lm-eval's draw for the first item of another split
    assert contexts("COPA", dev[:1], dev, 3, seed=7, same_split=False)[0].startswith(
        doc_to_text("COPA", first[0]) + " " + doc_to_choice("COPA", first[0])[first[0]["label"]] + "\n\n")


def test_macro_f1_equals_scikit_learn():
    from sklearn.metrics import f1_score

    rnd = random.Random(0)
    for k in (2, 4):
        golds = [rnd.randrange(k) for _ in range(40)]
        preds = [rnd.randrange(k) for _ in range(40)]
        assert macro_f1(golds, preds) == pytest.approx(f1_score(golds, preds, average="macro"))
    assert macro_f1([0, 0, 1], [0, 0, 0]) == pytest.approx(f1_score([0, 0, 1], [0, 0, 0], average="macro", zero_division=0))


def test_trailing_spaces_move_to_the_continuation():
    class Chars:  # a real, trivial encoder: one id per character
        eos_id = 0

        def encode_batch(self, texts):
            return [[ord(c) for c in t] for t in texts]

    ctx, cont = encode_pair(Chars(), "답변: ", " 예")
    assert ctx == [ord(c) for c in "답변:"] and cont == [ord(c) for c in "  예"]
