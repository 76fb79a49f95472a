"""Regenerates configs/: the bert_config.json of every published TF Hub BERT, and configs/cards.json
with the model-card facts an export cannot tell (handle, dataset, language, description).

    python scripts/make_configs.py
"""

from __future__ import annotations

import json
import os

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
ENGLISH = ("This model has been pre-trained for English on the Wikipedia and BooksCorpus using the code "
           "published on GitHub.")


def google_config(layers: int, hidden: int, vocab: int, cased: bool, **extra) -> dict:
    config = {"attention_probs_dropout_prob": 0.1, "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
              "hidden_size": hidden, "initializer_range": 0.02, "intermediate_size": 4 * hidden,
              "max_position_embeddings": 512, "num_attention_heads": hidden // 64, "num_hidden_layers": layers,
              "type_vocab_size": 2, "vocab_size": vocab}
    if cased:
        config["directionality"] = "bidi"
    return config | extra


def family() -> dict[str, tuple[dict, dict]]:
    models = {}
    for cased in (False, True):
        for layers, hidden in ((12, 768), (24, 1024)):
            name = f"bert_en_{'cased' if cased else 'uncased'}_L-{layers}_H-{hidden}_A-{hidden // 64}"
            models[name] = (google_config(layers, hidden, 28996 if cased else 30522, cased),
                            {"model_name": f"tensorflow/{name}/1", "dataset": "wikipedia-and-bookscorpus",
                             "language": "en", "description": ENGLISH})
            if layers == 24:
                wwm = f"bert_en_wwm_{'cased' if cased else 'uncased'}_L-24_H-1024_A-16"
                models[wwm] = (google_config(24, 1024, 28996 if cased else 30522, cased),
                               {"model_name": f"tensorflow/{wwm}/1", "dataset": "wikipedia-and-bookscorpus",
                                "language": "en", "description": ENGLISH + " Training used whole word masking."})
    multi = "bert_multi_cased_L-12_H-768_A-12"
    models[multi] = (google_config(12, 768, 119547, True, pooler_fc_size=768, pooler_num_attention_heads=12,
                                   pooler_num_fc_layers=3, pooler_size_per_head=128, pooler_type="first_token_transform"),
                     {"model_name": f"tensorflow/{multi}/1", "dataset": "wikipedia", "language": "multilingual",
                      "description": "This model has been pre-trained on Wikipedia in 104 languages."})
    for layers in (2, 4, 6, 8, 10, 12):
        for hidden in (128, 256, 512, 768):
            name = f"bert_en_uncased_L-{layers}_H-{hidden}_A-{hidden // 64}"
            card = {"model_name": f"tensorflow/small_bert/{name}/1", "dataset": "wikipedia-and-bookscorpus",
                    "language": "en", "description": "One of the 24 Small BERTs (Turc et al., 2019, "
                    "\"Well-Read Students Learn Better\"), pre-trained for English on Wikipedia and BooksCorpus."}
            if name in models:  # L-12 H-768 is BERT-base itself
                continue
            models[name] = (google_config(layers, hidden, 30522, False), card)
    return models


def main() -> None:
    cards = {}
    for name, (config, card) in sorted(family().items()):
        with open(os.path.join(CONFIGS, f"{name}.json"), "w") as f:
            json.dump(config, f, indent=2, sort_keys=True)
            f.write("\n")
        cards[name] = card
    with open(os.path.join(CONFIGS, "cards.json"), "w") as f:
        json.dump(cards, f, indent=2, sort_keys=True)
        f.write("\n")
    print(f"wrote {len(cards)} configs and cards.json to {CONFIGS}")


if __name__ == "__main__":
    main()
