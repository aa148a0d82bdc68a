"""Inference beyond one utterance: speech recognisers behind one interface, and the emotion timeline of a recording."""
