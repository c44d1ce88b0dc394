"""Defaults shared by the experiment configs in experiments/ (each overrides what it needs),
and SCHEMA: the type and range or choices of every field, checked by lmjax.config_schema before
a run writes or compiles anything.

Every field can be overridden on the command line: --config.model.num_layers=4.
"""

import ml_collections

from lmjax import sharding
from lmjax.config_schema import PROBABILITY, Bool, Choice, Float, Int, Str


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.task = 'lm'  # lm | translation | ngram | classify | mlm | embeddings (lmjax/tasks/)
  # Warm start: a workdir (its newest intact checkpoint) or WORKDIR/checkpoints/STEP; matching
  # parameters are loaded, new ones keep their init (lmjax/warm_start.py). '' starts fresh.
  c.init_from = ''
  c.seed = 0
  c.batch_size = 32
  c.eval_batch_size = 32
  c.seq_len = 128
  c.num_train_steps = 1000
  c.num_epochs = 0  # > 0: train this many epochs instead of num_train_steps
  c.grad_accum_steps = 1  # microbatches per update (the batch is split, gradients summed)
  c.label_smoothing = 0.0
  # 'tokens': mean per target token; 'sequences': summed over time, mean over the batch;
  # 'sum': the batch's summed gradient (word embeddings, whose lr is per pair)
  c.loss_normalization = 'tokens'
  c.log_every = 50
  c.eval_every = 500  # 0: once per epoch
  # Keeps the last max_to_keep steps plus the best by eval best_metric ('' to disable; mode
  # min or max). stop_check_every: with several processes, how often (steps) they agree on
  # whether a SIGTERM arrived (a tiny all-gather); alone, every step at no cost.
  c.checkpoint = ml_collections.ConfigDict({'every': 500, 'max_to_keep': 3,
                                            'async_save': True, 'best_metric': 'ppl',
                                            'best_mode': 'min', 'stop_check_every': 1})
  # A step whose loss or gradient norm is NaN/Inf applies no update; 'stop' then ends the run
  # (exit 2, no checkpoint of it), 'skip' goes on and counts it ('skipped' in metrics.jsonl).
  c.nan_policy = 'stop'
  # Test hooks (fault injection; 0 = off): the update making step N gets a NaN loss and
  # gradient; the checkpoint save at step N fails as on a full disk (OSError ENOSPC).
  c.debug_nan_at_step = 0
  c.debug_fail_save_at_step = 0

  c.model = ml_collections.ConfigDict({
      'name': 'transformer', 'd_model': 512, 'num_heads': 8, 'num_layers': 6, 'd_ff': 2048,
      'max_len': 1024, 'dropout_rate': 0.1, 'attention_dropout_rate': 0.0,
      'position': 'learned', 'tie_embeddings': True, 'scan_layers': True, 'remat': 'none',
      'dtype': 'float32'})

  c.data = ml_collections.ConfigDict({
      'source': 'synthetic', 'train': '', 'eval': '', 'test': '', 'eval_fraction': 0.0,
      'name': '', 'train_split': 'train',
      'eval_split': 'validation', 'data_dir': '', 'text_key': '',
      'tokenizer': 'word', 'vocab_size': 8000, 'spm_model': '', 'spm_type': 'unigram',
      'spm_input_sentence_size': 0,
      'synthetic_lines': 20000, 'synthetic_eval_lines': 2000, 'seed': 0})
  # Word vocabularies (tokenizer='word'): words seen fewer than min_count times, or past the
  # max_vocab most frequent (0: no limit), are unknown.
  c.data.update(min_count=1, max_vocab=0)
  # Text cleaning of local text before anything else (lmjax/data/clean.py; all off).
  c.data.clean = ml_collections.ConfigDict({
      'nfkc': False, 'lowercase': False, 'strip_html': False, 'punctuation': '',
      'collapse_whitespace': False, 'stopwords': ''})

  c.optimizer = ml_collections.ConfigDict({
      'name': 'adamw', 'learning_rate': 1e-3, 'warmup_steps': 100, 'schedule': 'cosine',
      'min_lr_ratio': 0.0, 'b1': 0.9, 'b2': 0.98, 'eps': 1e-9, 'weight_decay': 0.01,
      'momentum': 0.0, 'grad_clip_norm': 1.0, 'decay_after_epochs': 4, 'decay_factor': 0.5,
      'initial_accumulator': 0.1})

  c.mesh = ml_collections.ConfigDict({'data': -1, 'fsdp': 1, 'tensor': 1})
  c.logical_axis_rules = [list(r) for r in sharding.DEFAULT_RULES]

  c.sample = ml_collections.ConfigDict({'num_samples': 4, 'prompt_tokens': 3,
                                        'max_new_tokens': 20, 'temperature': 0.8, 'top_k': 0,
                                        'top_p': 0.95})
  c.decode = ml_collections.ConfigDict({
      'beam_size': 4, 'alpha': 0.6, 'batch_size': 64, 'max_len_ratio': 1.5,
      'max_len_offset': 10})
  return c


def translation_config() -> ml_collections.ConfigDict:
  """base_config() with translation data fields (lmjax/data/translation.py documents them)."""
  c = base_config()
  c.task = 'translation'
  c.seq_len = 64  # row length of both sides (packed rows hold several pairs)
  c.label_smoothing = 0.1
  c.checkpoint.best_metric = 'bleu'
  c.checkpoint.best_mode = 'max'
  c.model = ml_collections.ConfigDict({
      'name': 'encoder_decoder', 'd_model': 512, 'num_heads': 8, 'num_encoder_layers': 6,
      'num_decoder_layers': 6, 'd_ff': 2048, 'max_len': 256, 'dropout_rate': 0.1,
      'attention_dropout_rate': 0.0, 'position': 'sinusoidal', 'tie_embeddings': True,
      'scan_layers': True, 'remat': 'none', 'dtype': 'float32'})
  c.data = ml_collections.ConfigDict({
      'source': 'synthetic', 'train': '', 'eval': '', 'test': '', 'source_lang': 'en',
      'target_lang': 'de', 'name': '', 'train_split': 'train', 'eval_split': 'validation',
      'test_split': '', 'data_dir': '', 'tokenizer': 'sentencepiece', 'vocab_size': 8000,
      'spm_model': '', 'spm_type': 'unigram', 'spm_input_sentence_size': 0,
      'joint_vocab': True, 'source_vocab_size': 0,
      'max_source_len': 64, 'max_target_len': 64, 'packing': True, 'pad_multiple': 8,
      'synthetic_lines': 20000, 'synthetic_eval_lines': 500, 'seed': 0})
  c.sample.num_samples = 0
  return c


def classify_config() -> ml_collections.ConfigDict:
  """base_config() for config.task='classify' (lmjax/tasks/classify.py; the data fields are
  documented in lmjax/data/classification.py): a bidirectional LSTM over a trained WordPiece
  vocabulary, mean-pooled."""
  c = base_config()
  c.task = 'classify'
  c.seq_len = 128  # tokens per example, [CLS]/[SEP] included; longer ones are truncated
  c.num_train_steps = 2000
  c.eval_every = 0  # once per epoch
  c.log_every = 100
  c.checkpoint.best_metric = 'accuracy'
  c.checkpoint.best_mode = 'max'
  c.sample.num_samples = 0
  c.optimizer.update(learning_rate=2e-3, warmup_steps=100, b2=0.999, eps=1e-8)
  c.classifier = ml_collections.ConfigDict({'pooling': 'mean', 'dropout_rate': 0.1})
  c.model = ml_collections.ConfigDict({
      'name': 'rnn_encoder', 'cell': 'lstm', 'embed_dim': 128, 'hidden_size': 128,
      'num_layers': 1, 'dropout': 0.1, 'init': 'orthogonal', 'dtype': 'float32'})
  c.data = ml_collections.ConfigDict({
      'source': 'text', 'train': '', 'eval': '', 'test': '', 'format': '',
      'text_column': 'sentence', 'text_pair_column': '', 'label_column': 'label',
      'classes': [], 'regression': False,
      'name': '', 'train_split': 'train', 'eval_split': 'validation', 'test_split': '',
      'data_dir': '',
      'tokenizer': 'wordpiece', 'vocab_size': 8000, 'wordpiece_vocab': '', 'lowercase': True,
      'spm_model': '', 'spm_type': 'unigram', 'spm_input_sentence_size': 0,
      'pad_multiple': 8, 'bucket': True,
      'synthetic_lines': 2000, 'synthetic_eval_lines': 200, 'seed': 0})
  c.data.clean = base_config().data.clean
  return c


def mlm_config() -> ml_collections.ConfigDict:
  """base_config() for config.task='mlm' (lmjax/tasks/mlm.py, lmjax/data/mlm.py): a small
  pre-LN BERT over a trained WordPiece vocabulary, BERT's masking."""
  c = base_config()
  c.task = 'mlm'
  c.seq_len = 128  # tokens per row, [CLS] and [SEP] included
  c.sample.num_samples = 0
  c.optimizer.update(learning_rate=5e-4, warmup_steps=500, b2=0.999, eps=1e-6,
                     weight_decay=0.01)
  # mask_rate of a row's tokens are predicted (at most max_predictions; 0: ceil(mask_rate x
  # (seq_len - 2))); of those mask_token_rate become [MASK], random_token_rate a random token,
  # the rest stay. eval_seed fixes the eval split's one masking, whatever config.seed is.
  c.mlm = ml_collections.ConfigDict({'mask_rate': 0.15, 'mask_token_rate': 0.8,
                                     'random_token_rate': 0.1, 'whole_word': False,
                                     'max_predictions': 0, 'eval_seed': 0})
  c.model = ml_collections.ConfigDict({
      'name': 'bert', 'd_model': 256, 'num_heads': 4, 'num_layers': 4, 'd_ff': 1024,
      'max_len': 512, 'type_vocab_size': 2, 'dropout_rate': 0.1,
      'attention_dropout_rate': 0.1, 'norm': 'pre', 'dtype': 'float32'})
  c.data.update(tokenizer='wordpiece', vocab_size=16000, wordpiece_vocab='', lowercase=True)
  return c


def embeddings_config() -> ml_collections.ConfigDict:
  """base_config() for config.task='embeddings' (lmjax/tasks/embeddings.py): word2vec
  skip-gram with negative sampling at the reference tools' defaults (dimension 100, window 5,
  5 negatives, sample 1e-3, min count 5, lr 0.025 decaying linearly, 5 epochs)."""
  c = base_config()
  c.task = 'embeddings'
  c.seq_len = 1000  # words per row (the C tool's longest sentence); rows follow the corpus
  c.batch_size = 8  # rows per step
  c.num_epochs = 5
  c.loss_normalization = 'sum'
  c.eval_every = 0  # once per epoch
  c.log_every = 100
  c.checkpoint.update(best_metric='', every=1000)
  c.sample.num_samples = 0
  c.model = ml_collections.ConfigDict({'name': 'word2vec', 'architecture': 'skipgram',
                                       'embed_dim': 100})
  c.data.update(source='text', tokenizer='word', min_count=5)
  c.optimizer.update(name='sgd', learning_rate=0.025, warmup_steps=0, schedule='linear',
                     min_lr_ratio=1e-4, grad_clip_norm=0.0, weight_decay=0.0)
  # row_cap: a table row touched by n > row_cap terms of one batch gets row_cap / n of its
  # summed gradient (lmjax/models/embeddings.py; 0: none). wordsim / simlex / analogy: '' = gensim's test data when gensim is installed, a path, or
  # 'off'; restrict_vocab: analogies over this many most frequent words.
  c.embeddings = ml_collections.ConfigDict({
      'window': 5, 'negatives': 5, 'noise_power': 0.75, 'sample': 1e-3, 'row_cap': 64.0,
      'x_max': 100.0, 'alpha': 0.75,
      'wordsim': '', 'simlex': '', 'analogy': '', 'restrict_vocab': 30000,
      'neighbours': 'king,france,three,good,computer'})
  return c


# Field -> rule (lmjax/config_schema.py). A config without the field skips it: model families
# have their own fields, which their config dataclasses check too (lmjax/models).
SCHEMA = {
    'task': Choice(('lm', 'translation', 'ngram', 'classify', 'mlm', 'embeddings')),
    'init_from': Str(),
    'seed': Int(0),
    'batch_size': Int(1),
    'eval_batch_size': Int(1),
    'seq_len': Int(1),
    'num_train_steps': Int(1),
    'num_epochs': Int(0),
    'grad_accum_steps': Int(1),
    'label_smoothing': PROBABILITY,
    'loss_normalization': Choice(('tokens', 'sequences', 'sum')),
    'log_every': Int(1),
    'eval_every': Int(0),
    'checkpoint.every': Int(1),
    'checkpoint.max_to_keep': Int(1),
    'checkpoint.async_save': Bool(),
    'checkpoint.best_metric': Str(),  # and one of the task's metrics (config_schema.check)
    'checkpoint.best_mode': Choice(('min', 'max')),
    'checkpoint.stop_check_every': Int(1),
    'nan_policy': Choice(('stop', 'skip')),
    'debug_nan_at_step': Int(0),
    'debug_fail_save_at_step': Int(0),
    # model.name: a family of lmjax.models.FAMILIES (or 'kneser_ney' for task ngram)
    'model.dtype': Choice(('float32', 'bfloat16')),
    'model.dropout_rate': PROBABILITY,
    'model.attention_dropout_rate': PROBABILITY,
    'model.dropout': PROBABILITY,  # the RNN LM's
    **{f'model.{k}': Int(1) for k in (
        'd_model', 'num_heads', 'num_layers', 'num_encoder_layers', 'num_decoder_layers',
        'd_ff', 'max_len', 'embed_dim', 'hidden_size')},
    'model.init_scale': Float(0, lo_open=True),
    'model.order': Int(1, 5),
    'data.source': Choice(('synthetic', 'text', 'tfds')),
    'data.train': Str(), 'data.eval': Str(), 'data.test': Str(),
    'data.eval_fraction': PROBABILITY,
    'data.tokenizer': Choice(('word', 'sentencepiece', 'char', 'wordpiece')),
    'data.wordpiece_vocab': Str(),
    'data.vocab_size': Int(1),
    'data.spm_model': Str(),
    'data.spm_type': Choice(('unigram', 'bpe')),
    'data.spm_input_sentence_size': Int(0),
    'data.synthetic_lines': Int(1),
    'data.synthetic_eval_lines': Int(1),
    'data.seed': Int(0),
    'data.max_source_len': Int(2),  # and <= seq_len
    'data.max_target_len': Int(2),
    'data.source_vocab_size': Int(0),  # 0: data.vocab_size
    'data.joint_vocab': Bool(),
    'data.packing': Bool(),
    'data.pad_multiple': Int(1),
    'optimizer.name': Choice(('adamw', 'adam', 'sgd', 'adagrad')),
    'optimizer.learning_rate': Float(0),
    'optimizer.warmup_steps': Int(0),
    'optimizer.schedule': Choice(('constant', 'cosine', 'linear', 'rsqrt', 'epoch_decay')),
    'optimizer.initial_accumulator': Float(0),
    'optimizer.min_lr_ratio': Float(0, 1),
    'optimizer.b1': Float(0, 1, hi_open=True),
    'optimizer.b2': Float(0, 1, hi_open=True),
    'optimizer.eps': Float(0),
    'optimizer.weight_decay': Float(0),
    'optimizer.momentum': Float(0, 1, hi_open=True),
    'optimizer.grad_clip_norm': Float(0),  # 0: no clipping
    'optimizer.decay_after_epochs': Int(0),
    'optimizer.decay_factor': Float(0, 1, lo_open=True),
    'mesh.data': Int(1, or_minus_one=True),  # -1: the remaining devices (one axis at most)
    'mesh.fsdp': Int(1, or_minus_one=True),
    'mesh.tensor': Int(1, or_minus_one=True),
    'sample.num_samples': Int(0),
    'sample.prompt_tokens': Int(1),
    'sample.max_new_tokens': Int(1),
    'sample.temperature': Float(0),  # 0: greedy
    'sample.top_k': Int(0),  # 0: no top-k filter
    'sample.top_p': Float(0, 1, lo_open=True),
    'decode.beam_size': Int(0),  # 0: no BLEU inside the loop
    'decode.alpha': Float(0),
    'decode.batch_size': Int(1),
    'decode.max_len_ratio': Float(0, lo_open=True),
    'decode.max_len_offset': Int(0),
    'mlm.mask_rate': Float(0, 1, lo_open=True),
    'mlm.mask_token_rate': Float(0, 1),
    'mlm.random_token_rate': Float(0, 1),
    'mlm.whole_word': Bool(),
    'mlm.max_predictions': Int(0),
    'mlm.eval_seed': Int(0),
    'data.min_count': Int(1),
    'data.max_vocab': Int(0),
    'data.clean.nfkc': Bool(), 'data.clean.lowercase': Bool(), 'data.clean.strip_html': Bool(),
    'data.clean.collapse_whitespace': Bool(),
    'data.clean.punctuation': Choice(('', 'strip', 'separate')),
    'data.clean.stopwords': Str(),
    'model.architecture': Choice(('skipgram', 'cbow')),
    'model.init_embeddings': Str(),  # a word-vector file (lmjax/warm_start.py)
    'model.freeze_embeddings': Bool(),
    'embeddings.window': Int(1),
    'embeddings.negatives': Int(1),
    'embeddings.noise_power': Float(0),
    'embeddings.sample': Float(0),
    'embeddings.row_cap': Float(0),
    'embeddings.x_max': Float(0, lo_open=True),
    'embeddings.alpha': Float(0),
    'embeddings.wordsim': Str(), 'embeddings.simlex': Str(), 'embeddings.analogy': Str(),
    'embeddings.restrict_vocab': Int(1),
    'embeddings.neighbours': Str(),
}


def load_experiment(path: str, variant: str = '') -> ml_collections.ConfigDict:
  """get_config(variant) of an experiment file (tests and tools; main.py uses config_flags)."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  import os  # pylint: disable=g-import-not-at-top
  if not os.path.isabs(path) and not os.path.exists(path):
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                        'experiments', path)
  spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(variant)
