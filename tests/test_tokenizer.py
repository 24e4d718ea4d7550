"""The embedded tokenizer, and max_single_token computed from whatever tokenizer a model has."""

from __future__ import annotations

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from neurolab.models.loading import number_token_ids
from neurolab.tasks.vocab import build_tokenizer


def test_every_integer_up_to_999_is_one_token():
    tokenizer = build_tokenizer()
    ids = number_token_ids(tokenizer)
    assert len(ids) - 1 == 999
    assert len(set(ids)) == 1000
    assert tokenizer.convert_ids_to_tokens(ids[437]) == "437"
    assert tokenizer.tokenize("23+45=") == ["23", "+", "45", "="]
    assert tokenizer.tokenize("capital of france is") == ["capital", "of", "france", "is"]
    assert tokenizer.tokenize("1000+1=")[0] == "[UNK]"


def test_max_single_token_of_a_bpe_tokenizer_is_measured_not_assumed():
    # A byte-level BPE trained here on a small corpus: only some integers become single tokens.
    core = Tokenizer(models.BPE(unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(pattern="=", behavior="isolated"), pre_tokenizers.ByteLevel(add_prefix_space=False)])
    core.decoder = decoders.ByteLevel()
    corpus = [f"{a}+{b}={a + b}" for a in range(60) for b in range(60)] + ["=" + str(n) for n in range(120)] * 20
    core.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=300, special_tokens=["[UNK]", "[PAD]"],
                                                         initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="[UNK]", pad_token="[PAD]")
    ids = number_token_ids(tokenizer)
    mst = len(ids) - 1
    assert 9 <= mst < 999
    assert len(tokenizer("=" + str(mst + 1), add_special_tokens=False)["input_ids"]) > 2
    for n in (0, 7, mst):
        assert tokenizer.decode([ids[n]]) == str(n)
