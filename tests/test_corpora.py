"""Corpus readers (RAVDESS, nEMO, a labelled CSV), splits across corpora, class masking, channel conditions."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from serd.train.channel import CONDITIONS, Channel, random_channel
from serd.train.corpora import Clip, emotion_name, find_clips, parse_spec
from serd.train.data import Corpus, epoch_arrays
from serd.train.augment import AugmentSettings
from serd.features import FeatureParams
from serd.train.splits import corpus_holdout, holdout_speakers, speaker_folds



def write_csv(path: Path, rows: list[str]) -> Path:
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


# -- readers ---------------------------------------------------------------------------------------

def test_nemo_reader_maps_names_and_genders(nemo_fixtures: Path):
    clips = find_clips(parse_spec(f"nemo={nemo_fixtures}"))
    assert len(clips) == 10 and {c.corpus for c in clips} == {"nemo"}
    assert {c.speaker for c in clips} == {"EB0", "MP0"}
    assert {c.emotion for c in clips} == {"angry", "fearful", "happy", "neutral", "sad"}
    assert all(c.path.is_file() for c in clips)
    assert {c.gender for c in clips if c.speaker == "EB0"} == {"female"}


def test_nemo_reader_takes_the_flac_for_a_wav_name_and_skips_rows_without_audio(nemo_fixtures: Path, tmp_path: Path):
    """The original release names .wav files; the converted corpus has .flac: both must read."""
    (tmp_path / "samples").mkdir()
    shutil.copy(nemo_fixtures / "samples" / "EB0_anger_1.flac", tmp_path / "samples")
    lines = (nemo_fixtures / "data.tsv").read_text(encoding="utf-8").splitlines()
    (tmp_path / "data.tsv").write_text("\n".join([lines[0], lines[1].replace(".flac", ".wav"), lines[2]]) + "\n", encoding="utf-8")
    clips = find_clips(parse_spec(f"nemo={tmp_path}"))
    assert [c.path.name for c in clips] == ["EB0_anger_1.flac"] and clips[0].emotion == "angry"
    (tmp_path / "data.tsv").write_text(lines[0] + "\n" + lines[1].replace("\tanger\t", "\tboredom\t") + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"data.tsv:2: unknown emotion 'boredom'"):
        find_clips(parse_spec(f"nemo={tmp_path}"))


def test_nemo_reader_on_the_whole_corpus(nemo_root: Path):
    clips = find_clips(parse_spec(f"nemo={nemo_root}"))
    assert len(clips) == 3812 and len({c.speaker for c in clips}) == 9
    assert "disgust" not in {c.emotion for c in clips}


def test_csv_reader_reads_relative_paths_and_synonyms(tmp_path: Path, sample_clip_paths):
    for i, clip in enumerate(sample_clip_paths[:3]):
        shutil.copy(clip, tmp_path / f"rec{i}.flac")
    table = write_csv(tmp_path / "labels.csv", ["path,speaker,emotion", "rec0.flac,ana,Anger", "rec1.flac,ana,joy",
                                                 f"{tmp_path / 'rec2.flac'},ben,neutral"])
    clips = find_clips(parse_spec(f"csv:school={table}"))
    assert [(c.corpus, c.speaker, c.emotion) for c in clips] == [("school", "ana", "angry"), ("school", "ana", "happy"),
                                                                 ("school", "ben", "neutral")]


@pytest.mark.parametrize("row, message", [
    ("rec0.flac,ana,bored", "labels.csv:3: unknown emotion 'bored'"),
    ("missing.flac,ana,sad", "labels.csv:3: missing.flac: no such file"),
    ("rec0.flac,,sad", "labels.csv:3: empty speaker"),
])
def test_csv_reader_names_the_bad_line(tmp_path: Path, sample_clip_paths, row, message):
    shutil.copy(sample_clip_paths[0], tmp_path / "rec0.flac")
    table = write_csv(tmp_path / "labels.csv", ["path,speaker,emotion", "rec0.flac,ana,sad", row])
    with pytest.raises(ValueError, match=message):
        find_clips(parse_spec(f"csv={table}"))


def test_csv_without_the_required_header_is_refused(tmp_path: Path):
    table = write_csv(tmp_path / "labels.csv", ["file,who,feeling", "a.flac,ana,sad"])
    with pytest.raises(ValueError, match=r"labels.csv:1: missing column\(s\) path, speaker, emotion"):
        find_clips(parse_spec(f"csv={table}"))


def test_data_specs():
    assert parse_spec("nemo=/d/nemo") == ("nemo", "nemo", Path("/d/nemo"))
    assert parse_spec("csv:school=x.csv") == ("csv", "school", Path("x.csv"))
    assert parse_spec("/d/ravdess").kind == "ravdess"
    for bad in ("wav=/x", "nemo:pl=/x", "nemo="):
        with pytest.raises(ValueError, match="--data"):
            parse_spec(bad)
    assert emotion_name("SADNESS") == "sad"


# -- splits across corpora -------------------------------------------------------------------------

def clips_of(corpus: str, speakers: int, per_speaker: int = 3) -> list[Clip]:
    return [Clip(Path(f"{corpus}/{s}/{k}.flac"), "sad", corpus, f"S{s:02d}") for s in range(speakers) for k in range(per_speaker)]


def test_speaker_folds_test_every_speaker_of_every_corpus_once_and_keep_roles_apart():
    clips = clips_of("ravdess", 24) + clips_of("nemo", 9)
    splits = speaker_folds(clips, 6)
    tested = [clips[i].key for s in splits for i in s.test]
    assert sorted(set(tested)) == sorted({c.key for c in clips}) and len(tested) == len(clips)  # each once
    for s in splits:
        roles = [{clips[i].key for i in part} for part in (s.train, s.val, s.test)]
        assert not (roles[0] & roles[1] or roles[0] & roles[2] or roles[1] & roles[2]), s.name
        assert {clips[i].corpus for i in s.test} == {"ravdess", "nemo"}  # every fold hears both corpora
        assert {clips[i].corpus for i in s.val} == {"ravdess", "nemo"}
        assert len(s.train) + len(s.val) + len(s.test) == len(clips)


def test_leave_one_corpus_out_tests_all_of_it_and_trains_on_none_of_it():
    clips = clips_of("ravdess", 24) + clips_of("nemo", 9)
    split = corpus_holdout(clips, "nemo")
    assert {clips[i].corpus for i in split.test} == {"nemo"} and len(split.test) == 27
    assert {clips[i].corpus for i in split.train + split.val} == {"ravdess"}
    assert split.val_actors == ("ravdess/S22", "ravdess/S23")
    with pytest.raises(ValueError, match="at least one other corpus"):
        corpus_holdout(clips_of("nemo", 9), "nemo")


def test_final_split_keeps_a_few_calibration_speakers_per_corpus():
    clips = [Clip(Path(f"{a}.flac"), "sad", "ravdess", f"{a:02d}", actor=a) for a in range(1, 25)] + clips_of("nemo", 9)
    split = holdout_speakers(clips, 1, (11, 12))
    assert split.val_actors == ("ravdess/11", "ravdess/12", "nemo/S08") and not split.test


def with_pooled(corpus: str, known: int, pooled_clips: int = 20) -> list[Clip]:
    """A corpus like EmoSpeech: a few identified speakers, and many clips under the id `unknown`."""
    return clips_of(corpus, known) + [Clip(Path(f"{corpus}/u/{k}.flac"), "sad", corpus, "unknown") for k in range(pooled_clips)]


def test_a_pooled_speaker_id_only_ever_trains():
    clips = clips_of("ravdess", 24) + clips_of("nemo", 9) + with_pooled("emospeech", 12)
    unknown = {i for i, c in enumerate(clips) if c.speaker == "unknown"}
    assert not clips[min(unknown)].speaker_known and clips[0].speaker_known
    folds = speaker_folds(clips, 6)
    for s in folds:
        assert unknown <= set(s.train), s.name
        assert {clips[i].corpus for i in s.test} == {"ravdess", "nemo", "emospeech"}
    assert sorted({clips[i].key for s in folds for i in s.test}) == sorted({c.key for c in clips if c.speaker_known})
    final = holdout_speakers(clips, 1, (11, 12))
    assert "emospeech/S11" in final.val_actors and unknown <= set(final.train)  # not `unknown`, which sorts last
    to_ravdess = corpus_holdout(clips, "ravdess")
    assert unknown <= set(to_ravdess.train) and "emospeech/unknown" not in to_ravdess.val_actors
    to_emospeech = corpus_holdout(clips, "emospeech")
    assert unknown <= set(to_emospeech.test)  # held out, every clip of it is tested


def test_emotion5_leaves_disgust_clips_out(ravdess_fixtures: Path, nemo_fixtures: Path):
    specs = [parse_spec(f"ravdess={ravdess_fixtures}"), parse_spec(f"nemo={nemo_fixtures}")]
    five = Corpus.from_specs(specs, "emotion5", 16000)
    six = Corpus.from_specs(specs, "emotion6", 16000)
    assert five.labels == ("neutral", "happy", "sad", "angry", "fearful")
    disgust = six.labels.index("disgust")
    assert len(five.clips) == len(six.clips) - int(np.sum(six.y == disgust)) > 0
    assert [c.path for c in five.clips] == [c.path for c, y in zip(six.clips, six.y) if y != disgust]
    assert [five.labels[k] for k in five.y] == [six.labels[k] for k in six.y if k != disgust]
    assert five.covers.all()  # both corpora have all five classes: nothing masked


# -- class masking -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def two_corpora(ravdess_fixtures: Path, nemo_fixtures: Path) -> Corpus:
    """The RAVDESS fixture clips (disgust among them) and the nEMO ones (no disgust)."""
    return Corpus.from_specs([parse_spec(f"ravdess={ravdess_fixtures}"), parse_spec(f"nemo={nemo_fixtures}")],
                             "emotion6", 16000)


def test_a_corpus_without_disgust_never_makes_disgust_a_training_target(two_corpora: Corpus):
    disgust = two_corpora.labels.index("disgust")
    nemo = [i for i, c in enumerate(two_corpora.clips) if c.corpus == "nemo"]
    assert "disgust" in two_corpora.classes_of("ravdess")
    assert nemo and not two_corpora.covers[nemo, disgust].any()
    assert two_corpora.covers[nemo][:, [k for k in range(6) if k != disgust]].all()
    assert "disgust" not in two_corpora.classes_of("nemo")
    x, targets, weights = epoch_arrays(two_corpora, nemo, FeatureParams(), AugmentSettings.none(),
                                       np.random.default_rng(0), crops_per_clip=1)
    assert targets.shape == (len(nemo), 7) and set(targets[:, 0].astype(int)) <= set(range(6)) - {disgust}
    assert (targets[:, 1 + disgust] == 0).all()
    # --no-class-mask: the same windows, and disgust a wrong answer for nEMO's clips too
    x_all, unmasked, _ = epoch_arrays(two_corpora, nemo, FeatureParams(), AugmentSettings.none(),
                                      np.random.default_rng(0), crops_per_clip=1, class_mask=False)
    np.testing.assert_array_equal(x_all, x)
    np.testing.assert_array_equal(unmasked[:, 0], targets[:, 0])
    assert (unmasked[:, 1:] == 1).all()


def test_masked_loss_gives_a_missing_class_no_gradient():
    tf = pytest.importorskip("tensorflow")
    from serd.train.fit import masked_cross_entropy

    logits = tf.Variable([[0.5, 0.1, -0.2, 0.3, 0.0, 2.0]])
    covers = [1, 1, 1, 1, 1, 0]  # disgust (last) not in this clip's corpus
    with tf.GradientTape() as tape:
        loss = masked_cross_entropy(tf.constant([[2.0, *covers]]), logits)
    grad = tape.gradient(loss, logits).numpy()[0]
    assert abs(grad[5]) < 1e-6 and grad[2] < 0  # neither pushed down nor up; the true class pulled up
    with tf.GradientTape() as tape:
        loss = masked_cross_entropy(tf.constant([[2.0, 1, 1, 1, 1, 1, 1]]), logits)
    assert tape.gradient(loss, logits).numpy()[0][5] > 0.1  # where the corpus has disgust, it is a wrong answer


def test_class_weights_give_every_corpus_the_same_total_weight(two_corpora: Corpus):
    indices = list(range(len(two_corpora.clips)))
    weights = two_corpora.class_weights(indices)
    assert weights.mean() == pytest.approx(1.0)
    by_corpus = {name: weights[[i for i in indices if two_corpora.clips[i].corpus == name]].sum() for name in two_corpora.corpora}
    assert by_corpus["ravdess"] == pytest.approx(by_corpus["nemo"])


# -- microphones and rooms ---------------------------------------------------------------------------

def band_db(x: np.ndarray, lo: float, hi: float, rate: int = 16000) -> float:
    spectrum = np.abs(np.fft.rfft(x)) ** 2
    f = np.fft.rfftfreq(x.shape[0], 1 / rate)
    return 10 * np.log10(spectrum[(f >= lo) & (f < hi)].mean())


@pytest.fixture(scope="module")
def white() -> np.ndarray:
    return (0.1 * np.random.default_rng(3).standard_normal(32000)).astype(np.float32)


def test_lowpass_and_highpass_cut_where_specified(white):
    low = CONDITIONS["lowpass_2k"].apply(white, 16000)
    assert band_db(white, 200, 1500) - band_db(low, 200, 1500) < 0.5
    assert band_db(white, 4000, 6000) - band_db(low, 4000, 6000) > 45  # 8th order: 48 dB at twice the corner
    high = CONDITIONS["highpass_300"].apply(white, 16000)
    assert band_db(white, 60, 120) - band_db(high, 60, 120) > 25
    assert band_db(white, 1000, 4000) - band_db(high, 1000, 4000) < 0.5


def test_tilt_is_the_given_slope_per_octave_above_its_corner(white):
    tilted = CONDITIONS["tilt_-12dB_oct"].apply(white, 16000)
    loss = [band_db(white, f / 1.1, f * 1.1) - band_db(tilted, f / 1.1, f * 1.1) for f in (500, 2000, 4000)]
    assert abs(loss[0]) < 0.5 and loss[1] == pytest.approx(12, abs=1.0) and loss[2] == pytest.approx(24, abs=1.0)


def test_dc_offset_and_clipping(white):
    offset = CONDITIONS["dc_offset"].apply(white, 16000)
    assert offset.mean() == pytest.approx(white.mean() + 0.05, abs=1e-4)
    clipped = CONDITIONS["clipping"].apply(white, 16000)
    peak = np.abs(white).max()
    assert np.abs(clipped).max() == pytest.approx(peak / 10 ** (12 / 20), rel=1e-3)  # flat tops 12 dB under the peak
    assert np.mean(np.abs(clipped) >= 0.999 * np.abs(clipped).max()) > 0.01


def test_a_resonance_bumps_its_band_only(white):
    bumped = Channel(resonances=((2000.0, 9.0, 0.5),)).apply(white, 16000)
    assert band_db(bumped, 1900, 2100) - band_db(white, 1900, 2100) == pytest.approx(9, abs=0.7)
    assert abs(band_db(bumped, 300, 600) - band_db(white, 300, 600)) < 0.3


def test_random_channels_vary_and_stay_finite(white):
    rng = np.random.default_rng(0)
    channels = [random_channel(rng) for _ in range(200)]
    freqs = np.linspace(0, 8000, 257)
    assert max(c.gain_db(freqs).max() for c in channels) < 40  # no channel boosts anything by more than 40 dB
    outs = [c.apply(white, 16000) for c in channels[:50]]
    assert all(np.isfinite(o).all() for o in outs)
    assert len({round(band_db(o, 3000, 6000), 1) for o in outs}) > 10
