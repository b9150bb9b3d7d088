"""The error the data pipeline raises for bad input: it names the file, corpus or directory and what to do."""


class DataError(ValueError):
    """Bad data input (corpus, tokenizer, output directory, dataset). The message says where and what to do."""
