"""Language identification: py3langid by default, a fastText LID model by local path, and the
`extract.languages` selection (everything else dropped as language_not_selected)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from pipeline import extract, schemas
from pipeline.cli import main
from pipeline.config import ConfigError, ExtractConfig, InputConfig, load_config
from pipeline.io import RunLayout, read_dataset
from pipeline.langid import LanguageIdentifier
from pipeline.warc import RawRecord
from stagehelpers import extract_one, extract_run

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample" / "warc"

# Written for this test: plain German sentences, the stand-in for lid.176's German training data.
GERMAN = """Der Zug nach Hamburg fährt heute eine halbe Stunde später ab.
Wir haben am Wochenende einen langen Spaziergang durch den Wald gemacht.
Die Stadtbibliothek ist montags geschlossen, aber dienstags bis acht Uhr geöffnet.
Meine Großmutter backt jeden Sonntag einen Apfelkuchen für die ganze Familie.
Im Sommer fahren viele Leute an die Ostsee, um sich am Strand zu erholen.
Das neue Gesetz soll die Mieten in den großen Städten bezahlbar halten.
Nach dem Regen war die Luft frisch und die Straßen glänzten im Licht.
Die Kinder spielen nach der Schule gern Fußball auf dem Platz hinter dem Haus.
Er hat sich für die Prüfung gut vorbereitet und ist trotzdem sehr nervös.
Unser Nachbar repariert sein Fahrrad selbst, weil die Werkstatt zu teuer ist.
Die Regierung hat beschlossen, mehr Geld in Schulen und Universitäten zu investieren.
Am Abend sitzen wir oft zusammen in der Küche und erzählen uns vom Tag.
Wenn es im Winter schneit, bleiben die meisten Menschen lieber zu Hause.
Der Arzt sagt, dass ich mehr Wasser trinken und weniger Kaffee trinken sollte.
Die Ausstellung im Museum zeigt Gemälde aus dem neunzehnten Jahrhundert.
Ich habe vergessen, die Fenster zu schließen, bevor ich das Haus verlassen habe.
Die Firma sucht neue Mitarbeiter für die Entwicklung von Software.
Auf dem Markt kaufen wir frisches Gemüse, Obst und Brot vom Bäcker.
Zwischen den beiden Dörfern gibt es nur eine schmale Straße über den Berg.
Sie lernt seit zwei Jahren Spanisch, weil sie später in Madrid arbeiten möchte.
""".splitlines()

ENGLISH = """The train to Boston leaves half an hour later than planned today.
We took a long walk through the forest over the weekend.
The city library is closed on Mondays but open until eight on Tuesdays.
My grandmother bakes an apple pie for the whole family every Sunday.
In summer many people go to the coast to relax on the beach.
The new law is meant to keep rents affordable in the big cities.
After the rain the air was fresh and the streets were shining in the light.
The children like to play football on the field behind the house after school.
He prepared well for the exam and is still very nervous.
Our neighbour repairs his bicycle himself because the workshop is too expensive.
The government decided to invest more money in schools and universities.
In the evening we often sit together in the kitchen and talk about the day.
When it snows in winter most people would rather stay at home.
The doctor says I should drink more water and less coffee.
The exhibition at the museum shows paintings from the nineteenth century.
I forgot to close the windows before I left the house.
The company is looking for new staff to develop software.
At the market we buy fresh vegetables, fruit and bread from the baker.
There is only a narrow road over the mountain between the two villages.
She has been learning Spanish for two years because she wants to work in Madrid later.
""".splitlines()


@pytest.fixture(scope="module")
def tiny_lid_model(tmp_path_factory) -> str:
    """A real fastText supervised model file with lid.176's label format (__label__en, __label__de)."""
    import fasttext

    folder = tmp_path_factory.mktemp("lid")
    train = folder / "train.txt"
    lines = [f"__label__de {line}" for line in GERMAN] + [f"__label__en {line}" for line in ENGLISH]
    train.write_text("\n".join(lines * 5) + "\n")
    model = fasttext.train_supervised(input=str(train), epoch=30, lr=0.5, dim=32, minn=2, maxn=4,
                                      wordNgrams=1, minCount=1, seed=1, thread=1, verbose=0)
    path = folder / "lid.tiny.bin"
    model.save_model(str(path))
    return str(path)


def html_record(url: str, paragraphs: list[str]) -> RawRecord:
    body = ("<html><body><article>" + "".join(f"<p>{p}</p>" for p in paragraphs)
            + "</article></body></html>").encode()
    block = b"HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n\r\n" + body
    return RawRecord(record_type="response", record_id=f"<urn:uuid:{uuid.uuid4()}>", url=url,
                     date="2024-08-02T10:00:00Z", offset=0, block=block, content_length=len(block))


def test_fasttext_model_by_local_path(tiny_lid_model):
    extractor = extract.Extractor(ExtractConfig(langid_model=tiny_lid_model, rules={"enabled": False}))
    german = extractor.process(html_record("https://de.example/", GERMAN[:8]), "test")
    english = extractor.process(html_record("https://en.example/", ENGLISH[:8]), "test")
    assert german.doc["language"] == "de" and english.doc["language"] == "en"
    assert 0.5 < german.doc["language_score"] <= 1.0 and 0.5 < english.doc["language_score"] <= 1.0
    # the selection applies to the model's labels
    only_german = extract.Extractor(ExtractConfig(langid_model=tiny_lid_model, languages=["de"],
                                                  rules={"enabled": False}))
    dropped = only_german.process(html_record("https://en.example/", ENGLISH[:8]), "test")
    assert dropped.decision["reason"] == "language_not_selected" and dropped.decision["detail"] == "en"


def test_missing_lid_model_is_a_clear_error(tmp_path, capsys):
    missing = tmp_path / "models" / "lid.176.bin"
    with pytest.raises(FileNotFoundError, match=f"extract.langid_model: no fastText LID model at {missing}"):
        LanguageIdentifier(str(missing))
    cfg = load_config(None, [f"out={tmp_path / 'out'}", f"extract.langid_model={missing}",
                             f"input.warcs=[{SAMPLE / 'jwarc-cc.warc.gz'}]"])
    with pytest.raises(ConfigError, match=f"extract.langid_model: no fastText language-ID model file at {missing}"):
        extract_run(cfg, quiet=True)
    # through the CLI: exit code 2 and the message, before any work starts
    code = main(["extract", "--warc", str(SAMPLE / "jwarc-cc.warc.gz"), "--out", str(tmp_path / "cli"),
                 "--set", f"extract.langid_model={missing}"])
    assert code == 2 and str(missing) in capsys.readouterr().err
    assert not (tmp_path / "cli").exists()


def test_languages_keeps_only_the_listed_ones(tmp_path):
    warcs = [SAMPLE / "clueweb-quirk.warc.gz", SAMPLE / "sample-0000.warc.gz"]  # Japanese, English
    cfg = load_config(None, [f"out={tmp_path}", "extract.languages=[ja]", "ray.executor=local",
                             "input.warcs=[" + ", ".join(str(w) for w in warcs) + "]"])
    extract_run(cfg, quiet=True)
    layout = RunLayout(tmp_path)
    docs = read_dataset(layout.dataset("docs"), schemas.DOCS).to_pylist()
    decisions = read_dataset(layout.decisions("extract"), schemas.DECISIONS).to_pylist()
    assert len(docs) == 29 and {d["language"] for d in docs} == {"ja"}
    not_selected = [d for d in decisions if d["reason"] == "language_not_selected"]
    assert not_selected and all(d["outcome"] == schemas.DROPPED for d in not_selected)
    assert {d["detail"] for d in not_selected} >= {"en"}
    assert all(d["source"].endswith("sample-0000.warc.gz") for d in not_selected)


def test_default_keeps_every_language_and_records_it(tmp_path):
    extract_one(str(SAMPLE / "clueweb-quirk.warc.gz"), ExtractConfig(), InputConfig(), str(tmp_path))
    docs = read_dataset(RunLayout(tmp_path).dataset("docs"), schemas.DOCS).to_pylist()
    assert {d["language"] for d in docs} == {"ja"} and all(0.9 < d["language_score"] <= 1 for d in docs)
    # the rules are English-derived: by default they are not applied to Japanese, whose scores stay null
    assert all(d["n_words"] is None and d["rule_failures"] == [] for d in docs)


def test_rules_are_measured_by_extract_and_decided_from_the_metrics():
    from pipeline.config import RulesConfig
    from pipeline.rules import METRICS
    from pipeline.rules_stage import decide_rows

    extractor = extract.Extractor(ExtractConfig())
    short = extractor.process(html_record("https://short.example/", ["Too short to be a document, really."]), "t")
    good = extractor.process(html_record("https://good.example/", ENGLISH), "t")
    # extract keeps every page with its metrics; nothing is decided there
    assert short.doc is not None and good.doc is not None and short.doc["rules_applied"]
    assert set(METRICS) <= set(good.doc) and good.doc["n_words"] > 150 and good.doc["line_punct_ratio"] == 1.0
    repeated = extractor.process(html_record("https://rep.example/", [ENGLISH[0]] * 40), "t")
    (short_failures, good_failures, repeated_failures) = decide_rows([short.doc, good.doc, repeated.doc], RulesConfig())
    assert short_failures[0].reason == "gopher_short_doc" and good_failures == []
    assert repeated_failures[0].reason.startswith("gopher_")  # repetition caught before anything else
    assert short_failures[0].detail == f"gopher_short_doc: n_words {short.doc['n_words']} < 50"


def test_fasttext_model_through_a_stage_run(tmp_path, ray_local, tiny_lid_model):
    # the model path travels to the Ray workers with the config
    cfg = load_config(None, [f"out={tmp_path}", f"extract.langid_model={tiny_lid_model}",
                             f"input.warcs=[{SAMPLE / 'sample-0001.warc.gz'}]"])
    extract_run(cfg, quiet=True)
    docs = read_dataset(RunLayout(tmp_path).dataset("docs"), schemas.DOCS).to_pylist()
    assert docs and {d["language"] for d in docs} <= {"en", "de"}
