"""How data/ was built from the project's shared corpora (kept for provenance; the product
never runs this: the files it writes are committed).

    python data/build_sample.py ../shared/corpora

Training samples keep the original formats where they are common ones (csv, tsv, txt) and
convert the rest (NSMC's per-movie JSON arrays -> gzipped JSON lines; tiny-shakespeare's
speeches -> JSON lines, one speech per document). Held-out text for evaluation is split off
deterministically and does not appear in the training samples.
"""

from __future__ import annotations

import gzip
import json
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(shared: Path) -> None:
    ko, en, held = HERE / "ko", HERE / "en", HERE / "heldout"
    for d in (ko, en, held):
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)

    # --- Korean training sample
    shutil.copy(shared / "ko/chatbot_data/ChatbotData.csv", ko / "chatbot.csv")
    shutil.copy(shared / "ko/korsts/sts-train.tsv", ko / "korsts_train.tsv")
    shutil.copy(shared / "ko/kornli/xnli.dev.ko.tsv", ko / "kornli_xnli_dev.tsv")
    (ko / "law").mkdir()
    shutil.copy(shared / "ko/konlpy/kolaw/constitution.txt", ko / "law" / "constitution.txt")
    for f in sorted((shared / "ko/konlpy/kobill").glob("*.txt")):
        shutil.copy(f, ko / "law" / f"bill_{f.name}")
    comments = (shared / "ko/korean-hate-speech/unlabeled_comments_5.txt").read_text(encoding="utf-8").splitlines()
    (ko / "news_comments.txt").write_text("\n".join(comments[:20000]) + "\n", encoding="utf-8")

    movie_files = sorted((shared / "ko/nsmc_raw").glob("*.json"))
    train_movies, held_movies = movie_files[:-8], movie_files[-8:]
    with gzip.open(ko / "nsmc_reviews.jsonl.gz", "wt", encoding="utf-8") as out:
        for f in train_movies:
            for r in json.loads(f.read_text(encoding="utf-8")):
                out.write(json.dumps(r, ensure_ascii=False) + "\n")

    # --- Korean held-out: KorSTS test sentences + reviews of 8 movies not in the sample
    held_ko = []
    for line in (shared / "ko/korsts/sts-test.tsv").read_text(encoding="utf-8").splitlines()[1:]:
        cols = line.split("\t")
        if len(cols) >= 7:
            held_ko.append(cols[5].strip())
    for f in held_movies:
        held_ko.extend(r["review"].strip() for r in json.loads(f.read_text(encoding="utf-8")))
    held_ko = list(dict.fromkeys(t for t in held_ko if len(t) >= 10))[:1500]
    (held / "ko.txt").write_text("\n".join(held_ko) + "\n", encoding="utf-8")

    # --- English: tiny-shakespeare speeches (jsonl) and Botchan lines (txt); last 5% held out
    speeches = [s.strip() for s in (shared / "en/tinyshakespeare/input.txt").read_text(encoding="utf-8").split("\n\n")]
    speeches = [s for s in speeches if s]
    cut = int(len(speeches) * 0.95)
    with open(en / "tinyshakespeare.jsonl", "w", encoding="utf-8") as out:
        for i, s in enumerate(speeches[:cut]):
            out.write(json.dumps({"id": f"shakespeare-{i}", "text": s}) + "\n")
    botchan = [l for l in (shared / "en/botchan/botchan.txt").read_text(encoding="utf-8").splitlines() if l.strip()]
    bcut = int(len(botchan) * 0.95)
    (en / "botchan.txt").write_text("\n".join(botchan[:bcut]) + "\n", encoding="utf-8")
    held_en = [s.replace("\n", " ") for s in speeches[cut:]] + botchan[bcut:]
    (held / "en.txt").write_text("\n".join(held_en) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/corpora"))
