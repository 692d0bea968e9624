"""Every metric against hand-computed cases, including the edge cases their reference evaluators define."""

from __future__ import annotations

import pytest

from mmcompress.evaluation.metrics import (
    anls,
    exact_match,
    levenshtein,
    mme_answer,
    mme_scores,
    normalize_vqa_answer,
    option_letter,
    pope_answer,
    pope_metrics,
    pope_scores,
    vqa_accuracy,
)


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [
        ("Yes.", "yes"),
        ("The Red Ball", "red ball"),  # lowercase, article dropped
        ("an apple", "apple"),
        ("Two", "2"),  # number word to digit
        ("none", "0"),
        ("1,000", "1000"),  # a comma between digits is deleted...
        ("red,blue", "red blue"),  # ...elsewhere a mark not next to a space becomes a space
        ("red, blue", "red blue"),  # next to a space it is deleted
        ("3.5", "3.5"),  # a decimal point stays
        ("end.", "end"),  # other periods go
        ("dont", "don't"),  # contractions restored
        ("couldnt've", "couldn't've"),
        ("were", "were"),  # an ordinary word is not taken for we're
        ("man's hat", "man's hat"),  # the apostrophe is not punctuation here
        ("left-hand", "left hand"),
        ("  yes\n", "yes"),
        ("what?!", "what"),
    ],
)
def test_vqa_normalisation(raw, normalised):
    assert normalize_vqa_answer(raw) == normalised


def test_vqa_accuracy_is_the_leave_one_out_average():
    # 2 of 10 humans said "2": leaving out one of them leaves 1 match (1/3), leaving out another leaves 2 (2/3)
    assert vqa_accuracy("two", ["2", "2"] + ["3"] * 8) == pytest.approx((2 * (1 / 3) + 8 * (2 / 3)) / 10)
    # 3 matches: 3 subsets keep 2 (2/3), 7 keep 3 (1)
    assert vqa_accuracy("2", ["2"] * 3 + ["x"] * 7) == pytest.approx((3 * (2 / 3) + 7) / 10)
    assert vqa_accuracy("2", ["2"] * 4 + ["x"] * 6) == 1.0
    assert vqa_accuracy("cat", ["dog"] * 10) == 0.0


def test_one_reference_stored_ten_times_is_normalised_exact_match():
    assert vqa_accuracy("The circle.", ["circle"] * 10) == 1.0
    assert vqa_accuracy("square", ["circle"] * 10) == 0.0
    with pytest.raises(ValueError):
        vqa_accuracy("x", [])


def test_gqa_exact_match():
    assert exact_match("Left.", "left") == 1.0
    assert exact_match(" yes ", "yes") == 1.0
    assert exact_match("the left", "left") == 0.0  # no article removal in GQA's exact match
    assert exact_match("left side", "left") == 0.0


@pytest.mark.parametrize(
    ("answer", "parsed"),
    [
        ("Yes.", "yes"),
        ("Yes", "yes"),
        ("No, there is not.", "no"),
        ("No.", "no"),
        ("There is not a dog in the image.", "no"),
        ("Yes, there is a dog. No other animals.", "yes"),  # only the first sentence counts
        ("I see a dog", "yes"),  # anything without no/not is yes, as LLaVA's eval_pope parses
        ("Nope", "yes"),
    ],
)
def test_pope_parsing(answer, parsed):
    assert pope_answer(answer) == parsed


def test_pope_metrics_by_hand():
    predicted = ["yes", "yes", "no", "no", "yes"]
    labels = ["yes", "no", "yes", "no", "yes"]  # TP 2, FP 1, FN 1, TN 1
    m = pope_metrics(predicted, labels)
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3)
    assert m["yes_ratio"] == pytest.approx(3 / 5)  # of the predictions, not the labels (3/5 too here)
    assert pope_metrics(["no", "no"], ["yes", "yes"])["yes_ratio"] == 0.0  # labels all yes, predictions none


def test_pope_per_split_mean_and_pooled():
    predictions = ["Yes.", "No, not at all.", "yes", "yes"]
    labels = ["yes", "no", "no", "yes"]
    splits = ["random", "random", "adversarial", "adversarial"]
    scores = pope_scores(predictions, labels, splits)
    assert scores["splits"]["random"]["accuracy"] == 1.0
    assert scores["splits"]["adversarial"]["accuracy"] == 0.5
    assert scores["splits"]["adversarial"]["f1"] == pytest.approx(2 / 3)  # P 1/2, R 1
    assert scores["mean_over_splits"]["f1"] == pytest.approx((1 + 2 / 3) / 2)
    assert scores["pooled"]["f1"] == pytest.approx(0.8)  # TP 2, FP 1, FN 0
    assert set(scores["definitions"]) >= {"f1", "yes_ratio", "mean_over_splits", "pooled"}


@pytest.mark.parametrize(
    ("answer", "parsed"),
    [
        ("Yes", "yes"),
        ("no.", "no"),
        ("Y", "yes"),
        ("n", "no"),
        ("Yes, it is.", "yes"),
        ("Not really", "no"),
        ("maybe", "other"),
    ],
)
def test_mme_parsing(answer, parsed):
    assert mme_answer(answer) == parsed


def test_mme_acc_plus_and_totals():
    # existence: image a both right, image b one right → acc 3/4, acc+ 1/2 → 125
    # code_reasoning: one image, one of two right → acc 1/2, acc+ 0 → 50
    predictions = ["Yes", "No", "Yes", "Yes", "yes", "maybe"]
    labels = ["Yes", "No", "Yes", "No", "Yes", "No"]
    categories = ["existence"] * 4 + ["code_reasoning"] * 2
    images = ["a", "a", "b", "b", "c", "c"]
    scores = mme_scores(predictions, labels, categories, images)
    existence = scores["categories"]["existence"]
    assert (existence["acc"], existence["acc_plus"], existence["score"]) == (0.75, 0.5, 125.0)
    assert scores["categories"]["code_reasoning"]["score"] == 50.0
    assert scores["perception"] == 125.0
    assert scores["cognition"] == 50.0
    assert scores["perception_plus_cognition"] == 175.0
    assert "count" in scores["categories_missing"]
    assert "max 2000" in scores["definitions"]["perception"]


@pytest.mark.parametrize(
    ("answer", "letter"),
    [
        ("B", "B"),
        ("b", "B"),
        ("(C)", "C"),
        ("A. a dog", "A"),
        ("D.", "D"),
        ("The answer is C.", "C"),
        ("I think it is a dog", None),
        ("E", None),  # not one of four options
    ],
)
def test_scienceqa_option_parsing(answer, letter):
    assert option_letter(answer, 4) == letter


def test_levenshtein():
    assert levenshtein("kitten", "sitting") == 3
    assert levenshtein("", "abc") == 3
    assert levenshtein("same", "same") == 0


def test_anls_threshold_and_max_over_answers():
    assert anls("abcd", ["abce"]) == pytest.approx(0.75)  # NL 1/4
    assert anls("abcd", ["abef"]) == 0.0  # NL exactly 0.5 is not below the threshold
    assert anls("abcd", ["wxyz"]) == 0.0
    assert anls("abcd", ["wxyz", "abcf"]) == pytest.approx(0.75)  # the best reference counts
    assert anls("  ABC  Def ", ["abc def"]) == 1.0  # case and spacing are normalised
    assert anls("abcdefghij", ["abcdefgh"]) == pytest.approx(0.8)  # two insertions over length 10
