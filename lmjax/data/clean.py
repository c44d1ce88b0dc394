"""Text cleaning for local corpora: Unicode normalisation, markup, case, punctuation, stop words.

Every task that reads local text can clean it before tokenizing, from one config block
(`config.data.clean`) whose options all default to off, so a corpus is read exactly as it is
unless an experiment asks otherwise. The steps always run in this order, whatever the order of
the config keys:

  1. nfkc                 Unicode NFKC: full-width letters and digits, ligatures ('ﬁ' -> 'fi'),
                          superscripts, compatibility spaces become their plain forms.
  2. strip_html           comments, <script>/<style> elements with their contents, declarations
                          (<!DOCTYPE …>) and tags are removed, then entities are decoded
                          (&amp; &lt; &#39; &#x27; &nbsp; …). Block-level tags (<p>, <br>, <li>,
                          <td>, …) become a space, so words on either side stay apart; inline tags
                          (<b>, <a href=…>, <span>) vanish, so 'W<b>or</b>d' stays one word. Any
                          '<name …>' counts as a tag: WikiText's '<unk>' goes too, so leave this off
                          for corpora that are not HTML.
  3. lowercase            str.lower ('É' -> 'é').
  4. punctuation          'strip' deletes every Unicode punctuation character (categories Pc Pd
                          Ps Pe Pi Pf Po: '.', '-', '—', '«', '¿', '。', …; symbols such as '$',
                          '+', '<' are category S and stay), so "don't" -> 'dont' and a token made
                          only of punctuation disappears; 'separate' puts a space on each side of
                          every punctuation character, so each one is a token of its own.
  5. stopwords            whitespace-split tokens found in the list (case-insensitively) are
                          removed. 'english' is the built-in ENGLISH_STOPWORDS; any other value is
                          a UTF-8 file with words separated by whitespace, usually one a line,
                          '#' starting a comment (write './english' for a file named 'english').
                          A removed word takes the whitespace after it with it (the last word on
                          the line, the whitespace before it), so the rest keeps its spacing.
                          Tokens are matched as they are at this point: with punctuation off,
                          'The,' is not 'the'.
  6. collapse_whitespace  every run of whitespace (tabs, no-break spaces, U+3000, …) becomes one
                          space and both ends are stripped.

Cleaning keeps the number of lines: a line may become empty, and the caller decides what an
empty line means (a paragraph break for language modelling, a pair to drop for translation).
Each `Cleaner.clean` call counts, per step, the lines it changed and the tokens it removed, for
one log line (`Cleaner.describe`) and for the error when nothing is left
(`Cleaner.check_not_empty`).

Speed: punctuation uses str.translate with a table over the whole Unicode range, built once
per process on first use (~0.2 s; a regex class of the same characters was 5x slower); stop
words are a set, and a line whose words are single-spaced skips the regex that keeps other
spacing. Measured on the WikiText-2 training split (36,718 lines, 2.05M tokens), 2 cores busy
with a training run: lowercase + punctuation 'strip' + english stop words + whitespace in
2.3-2.8 s, every option on in ~3.9 s.
"""

from __future__ import annotations

import functools
import html
import operator
import os
import re
import sys
import types
import unicodedata
from collections.abc import Mapping, Sequence

from lmjax.data import text
from lmjax.errors import UserError

_FIELD = 'config.data.clean'

# The options and their defaults (all off). Read-only: copy it (`dict(OPTIONS)`) to build a config.
OPTIONS = types.MappingProxyType({
    'nfkc': False,
    'lowercase': False,
    'strip_html': False,
    'punctuation': '',
    'collapse_whitespace': False,
    'stopwords': '',
})

PUNCTUATION_MODES = ('', 'strip', 'separate')

# Common English function words: articles and determiners, pronouns, auxiliaries and modals,
# prepositions, conjunctions and a few grammatical adverbs. Lowercase, no apostrophes: split-off
# clitics ("'s", "n't") and content words are left alone.
ENGLISH_STOPWORDS = (
    # Articles, determiners and quantifiers.
    'a', 'an', 'the', 'this', 'that', 'these', 'those', 'each', 'every', 'either', 'neither',
    'some', 'any', 'no', 'all', 'both', 'few', 'many', 'much', 'more', 'most', 'other',
    'another', 'such',
    # Personal, possessive and reflexive pronouns.
    'i', 'me', 'my', 'mine', 'myself', 'we', 'us', 'our', 'ours', 'ourselves', 'you', 'your',
    'yours', 'yourself', 'yourselves', 'he', 'him', 'his', 'himself', 'she', 'her', 'hers',
    'herself', 'it', 'its', 'itself', 'they', 'them', 'their', 'theirs', 'themselves',
    # Interrogative, relative and indefinite pronouns.
    'who', 'whom', 'whose', 'which', 'what', 'whoever', 'whatever', 'whichever', 'someone',
    'somebody', 'something', 'anyone', 'anybody', 'anything', 'everyone', 'everybody',
    'everything', 'nobody', 'nothing', 'none',
    # Auxiliaries and modals.
    'be', 'am', 'is', 'are', 'was', 'were', 'been', 'being', 'have', 'has', 'had', 'having', 'do',
    'does', 'did', 'doing', 'will', 'would', 'shall', 'should', 'can', 'could', 'may', 'might',
    'must', 'ought',
    # Prepositions.
    'about', 'above', 'across', 'after', 'against', 'along', 'among', 'around', 'as',
    'at', 'before', 'behind', 'below', 'beneath', 'beside', 'besides', 'between', 'beyond', 'by',
    'down', 'during', 'except', 'for', 'from', 'in', 'inside', 'into', 'like', 'near', 'of',
    'off', 'on', 'onto', 'out', 'outside', 'over', 'since', 'through', 'throughout',
    'till', 'to', 'toward', 'towards', 'under', 'until', 'up', 'upon', 'via',
    'with', 'within', 'without',
    # Conjunctions.
    'and', 'but', 'or', 'nor', 'so', 'yet', 'because', 'although', 'though', 'if', 'unless',
    'whereas', 'while', 'whether', 'than', 'when', 'whenever', 'where', 'wherever',
    'why', 'how',
    # Grammatical adverbs and particles.
    'not', 'also', 'very', 'too', 'just', 'only', 'then', 'there', 'here', 'again', 'ever',
    'never', 'now', 'still', 'even', 'already', 'quite', 'rather', 'else',
)

# Tags that end a block of text when rendered: removing them leaves a space, not nothing.
_BLOCK_TAGS = frozenset((
    'address', 'article', 'aside', 'blockquote', 'body', 'br', 'caption', 'dd', 'div', 'dl',
    'dt', 'figcaption', 'figure', 'footer', 'form', 'h1', 'h2', 'h3', 'h4', 'h5', 'h6', 'head',
    'header', 'hr', 'html', 'li', 'main', 'nav', 'ol', 'option', 'p', 'pre', 'section', 'table',
    'tbody', 'td', 'tfoot', 'th', 'thead', 'title', 'tr', 'ul',
))

# The markup patterns run over the whole text (lines joined by '\n'), so a comment, a
# <script> element or a tag whose attributes span lines is removed whole; what they cover is
# replaced by its newlines, which keeps the line count.
_COMMENT = re.compile(r'<!--.*?-->', re.S)
_SCRIPT_STYLE = re.compile(r'<(script|style)\b[^>]*>.*?</\1\s*>', re.S | re.I)
_DECLARATION = re.compile(r'<[!?][^<>]*>')
# A tag: '<' or '</', a name starting with a letter, then attributes (quoted values may hold
# '<' and '>'), an optional '/', '>'. 'a < b' and '<3' are not tags.
_TAG = re.compile(r'</?([A-Za-z][A-Za-z0-9:._-]*)(?:\s(?:[^<>"\']|"[^"]*"|\'[^\']*\')*)?/?>')
_SPACE_RUN = re.compile(r'(\s+)')  # \s is str.isspace, the whitespace of str.split.


def _newlines_of(match: re.Match) -> str:
  return '\n' * match.group().count('\n')


def _tag_replacement(match: re.Match) -> str:
  newlines = match.group().count('\n')
  if newlines:
    return '\n' * newlines
  return ' ' if match.group(1).lower() in _BLOCK_TAGS else ''


def _remove_markup(chunk: str) -> str:
  chunk = _COMMENT.sub(_newlines_of, chunk)
  chunk = _SCRIPT_STYLE.sub(_newlines_of, chunk)
  chunk = _DECLARATION.sub(_newlines_of, chunk)
  return _TAG.sub(_tag_replacement, chunk)


def _unescape(line: str) -> str:
  if '&' not in line:
    return line
  line = html.unescape(line)
  # '&#10;' decodes to a newline, which would split the line in two.
  return line.replace('\n', ' ') if '\n' in line else line


@functools.cache
def _punctuation_points() -> tuple[int, ...]:
  """Every punctuation code point (categories P*) in all of Unicode (~0.2 s, once)."""
  return tuple(cp for cp in range(sys.maxunicode + 1) if unicodedata.category(chr(cp))[0] == 'P')


@functools.cache
def _punctuation_table(mode: str) -> dict[int, str | None]:
  """The str.translate table for punctuation mode 'strip' or 'separate'."""
  points = _punctuation_points()
  if mode == 'strip':
    return dict.fromkeys(points)
  return {cp: f' {chr(cp)} ' for cp in points}


def _num_changed(before: Sequence[str], after: Sequence[str]) -> int:
  return sum(map(operator.ne, before, after))


def _num_tokens(lines: Sequence[str]) -> int:
  return sum(len(line.split()) for line in lines)


def _without_stopwords(core: str, keep: Sequence[bool]) -> str:
  """`core` (no whitespace at its ends) without the words whose `keep` is False.

  A removed word takes the whitespace run after it; the last word, the run before it.
  """
  parts = _SPACE_RUN.split(core)  # [word, space, word, …, space, word]
  parts.append('')  # The "run" after the last word.
  body = ''.join([word + space for word, space, kept in zip(parts[::2], parts[1::2], keep)
                  if kept])
  # Words hold no whitespace, so this drops just the run after the last kept word.
  return body if keep[-1] else body.rstrip()


def _read_stopword_file(path: str) -> frozenset[str]:
  what = f'{_FIELD}.stopwords file'
  path = os.path.expanduser(path)
  content = text.decode_text(text.read_bytes(path, what), f'{what} {path}')
  words = set()
  for line in text.split_lines(content):
    words.update(line.split('#', 1)[0].lower().split())
  if not words:
    raise UserError(f'{what} {path} has no words (only blank lines and # comments)')
  return frozenset(words)


class Cleaner:
  """Cleans lines of text as `config.data.clean` says; counts what each step changed.

  Attributes:
    options: every option with its value (the defaults filled in).
    active: whether any step is on (when not, `clean` returns the lines as they are).
    counts: what the last `clean` call did (see `clean`).
  """

  def __init__(self, config: Mapping | None = None):
    """Checks the options and loads the stop words.

    Args:
      config: a mapping (dict, ml_collections ConfigDict) of some of the OPTIONS names; those
        left out keep their defaults. None means all defaults.

    Raises:
      UserError: an unknown option, a value of the wrong type, a punctuation mode that is not
        '', 'strip' or 'separate', or a stop-word file that is missing, unreadable, not UTF-8 or
        has no words. The message names the field `config.data.clean.<name>`.
    """
    if config is not None and not hasattr(config, 'items'):
      raise UserError(f'{_FIELD} must be a mapping of options, got {config!r}')
    given = dict(config.items()) if config is not None else {}
    unknown = sorted(set(given) - set(OPTIONS), key=str)
    if unknown:
      raise UserError(f'{_FIELD}.{unknown[0]}: unknown option; the options are '
                      f'{", ".join(OPTIONS)}')
    options = {**OPTIONS, **given}
    for name, default in OPTIONS.items():
      value = options[name]
      if isinstance(default, bool) and not isinstance(value, bool):
        raise UserError(f'{_FIELD}.{name} must be True or False, got {value!r}')
      if isinstance(default, str) and not isinstance(value, str):
        raise UserError(f'{_FIELD}.{name} must be a string, got {value!r}')
    if options['punctuation'] not in PUNCTUATION_MODES:
      raise UserError(f"{_FIELD}.punctuation must be '', 'strip' or 'separate', got "
                      f"{options['punctuation']!r}")
    self.options = options
    stopwords = options['stopwords']
    if not stopwords:
      self._stopwords = frozenset()
    elif stopwords == 'english':
      self._stopwords = frozenset(ENGLISH_STOPWORDS)
    else:
      self._stopwords = _read_stopword_file(stopwords)
    self.active = any(bool(value) for value in options.values())
    self.counts = self._zero_counts(0)

  @staticmethod
  def _zero_counts(num_lines: int) -> dict[str, int]:
    return {'lines': num_lines, 'tokens_in': 0, 'tokens_out': 0,
            'nfkc_changed': 0, 'html_changed': 0, 'lowercase_changed': 0,
            'punctuation_changed': 0, 'punctuation_removed': 0,
            'stopwords_removed': 0, 'whitespace_changed': 0}

  def clean(self, lines: Sequence[str]) -> list[str]:
    """The cleaned lines, as many as given (a line may end up empty).

    Sets `counts` for this call: 'lines'; 'tokens_in' and 'tokens_out' (whitespace-split
    tokens before and after); '<step>_changed', the lines a step changed (nfkc, html,
    lowercase, punctuation, whitespace); 'punctuation_removed' and 'stopwords_removed', the
    tokens those steps deleted. Steps that are off count 0.
    """
    opts = self.options
    counts = self._zero_counts(len(lines))
    counts['tokens_in'] = _num_tokens(lines)
    out = list(lines)
    if opts['nfkc']:
      new = [line if unicodedata.is_normalized('NFKC', line)
             else unicodedata.normalize('NFKC', line) for line in out]
      counts['nfkc_changed'] = _num_changed(out, new)
      out = new
    if opts['strip_html']:
      new = self._strip_html(out)
      counts['html_changed'] = _num_changed(out, new)
      out = new
    if opts['lowercase']:
      new = [line.lower() for line in out]
      counts['lowercase_changed'] = _num_changed(out, new)
      out = new
    if opts['punctuation']:
      table = _punctuation_table(opts['punctuation'])
      new = [line.translate(table) for line in out]
      changed = [(a, b) for a, b in zip(out, new) if a != b]
      counts['punctuation_changed'] = len(changed)
      if opts['punctuation'] == 'strip':
        counts['punctuation_removed'] = sum(len(a.split()) - len(b.split()) for a, b in changed)
      out = new
    if self._stopwords:
      out, counts['stopwords_removed'] = self._remove_stopwords(out)
    if opts['collapse_whitespace']:
      new = [' '.join(line.split()) for line in out]
      counts['whitespace_changed'] = _num_changed(out, new)
      out = new
    counts['tokens_out'] = _num_tokens(out)
    self.counts = counts
    return out

  @staticmethod
  def _strip_html(lines: list[str]) -> list[str]:
    joined = '\n'.join(lines)
    if '<' in joined:
      if joined.count('\n') == len(lines) - 1:
        joined = _remove_markup(joined)
        lines = joined.split('\n')
      else:  # A line holds a newline itself: markup cannot span lines then.
        lines = [_remove_markup(line) for line in lines]
    return [_unescape(line) for line in lines]

  def _remove_stopwords(self, lines: list[str]) -> tuple[list[str], int]:
    stop = self._stopwords
    out = []
    removed = 0
    for line in lines:
      words = line.split()
      keep = [word.lower() not in stop for word in words]
      num_kept = sum(keep)
      if num_kept == len(words):
        out.append(line)
        continue
      removed += len(words) - num_kept
      core = line.strip()
      if ' '.join(words) == core:  # Single spaces between words: the common, fast case.
        body = ' '.join([word for word, kept in zip(words, keep) if kept])
      else:
        body = _without_stopwords(core, keep)
      start = len(line) - len(line.lstrip())
      end = len(line.rstrip())
      out.append(line[:start] + body + line[end:])
    return out, removed

  def _summary(self) -> str:
    """The counts in words, for the active steps, in the order they ran."""
    c = self.counts
    steps = []
    if self.options['nfkc']:
      steps.append(f'nfkc changed {c["nfkc_changed"]:,} lines')
    if self.options['strip_html']:
      steps.append(f'html changed {c["html_changed"]:,} lines')
    if self.options['lowercase']:
      steps.append(f'lowercase changed {c["lowercase_changed"]:,} lines')
    mode = self.options['punctuation']
    if mode == 'strip':
      steps.append(f'punctuation (strip) removed {c["punctuation_removed"]:,} tokens')
    elif mode == 'separate':
      steps.append(f'punctuation (separate) changed {c["punctuation_changed"]:,} lines')
    if self.options['stopwords']:
      steps.append(f'stopwords ({self.options["stopwords"]}) removed '
                   f'{c["stopwords_removed"]:,} tokens')
    if self.options['collapse_whitespace']:
      steps.append(f'whitespace changed {c["whitespace_changed"]:,} lines')
    if not steps:
      return f'cleaning off, {c["lines"]:,} lines'
    return (f'cleaned {c["lines"]:,} lines: {", ".join(steps)}; '
            f'{c["tokens_in"]:,} -> {c["tokens_out"]:,} tokens')

  def describe(self, what: str) -> str:
    """One log line about the last `clean` call, e.g. 'config.data.train: cleaned 3 lines: …'."""
    return f'{what}: {self._summary()}'

  def check_not_empty(self, lines: Sequence[str], what: str) -> None:
    """Raises a UserError naming `what` when every one of `lines` (cleaned) is blank.

    Args:
      lines: the output of the last `clean` call.
      what: the field or file the lines came from, e.g. 'config.data.train'.
    """
    if not any(line and not line.isspace() for line in lines):
      raise UserError(f'{what}: empty after cleaning ({self._summary()})')
