"""The AC score (Law of Vision Representation): rank vision representations without finetuning them all.

A (cross-modal alignment): a candidate's visual tokens after its align-stage projector, each matched to its
most similar token of a reference representation's (cosine), averaged over tokens and images.
C (correspondence): zero-shot keypoint transfer between image pairs on the candidate's grid features, PCK.
A degree-2 polynomial in min-max normalised (A, C) then predicts the benchmark score, and the AC policy
chooses which candidates to finetune so that the best is found after few full trainings.
"""
