"""Text cleaning (lmjax.data.clean): each step on hand-computed strings, counts, order, errors."""

import random
import unicodedata

import ml_collections
import pytest

from lmjax.data import clean

import cli_checks


_user_error = cli_checks.user_error


def _clean(lines, **options):
  return clean.Cleaner(options).clean(lines)


# ----------------------------------------------------------------------------- defaults


TRICKY = [
    '\tTabs\tand  two  spaces ',
    '<p>Looks like <b>HTML</b> &amp; &nbsp;entities</p>',
    'ＦＵＬＬ　ｗｉｄｔｈ ﬁ ligature',
    'The «quoted» — dash, and É',
    '',
    '   ',
    'a < b > c <!-- not removed -->',
]


def test_options_are_all_off():
  assert dict(clean.OPTIONS) == {'nfkc': False, 'lowercase': False, 'strip_html': False,
                                 'punctuation': '', 'collapse_whitespace': False,
                                 'stopwords': ''}
  with pytest.raises(TypeError):
    clean.OPTIONS['lowercase'] = True  # Read-only.


@pytest.mark.parametrize('config', [None, {}, dict(clean.OPTIONS),
                                    ml_collections.ConfigDict(dict(clean.OPTIONS))])
def test_defaults_change_nothing(config):
  cleaner = clean.Cleaner(config)
  assert not cleaner.active
  assert cleaner.clean(TRICKY) == TRICKY
  counts = cleaner.counts
  assert counts['lines'] == len(TRICKY)
  assert counts['tokens_in'] == counts['tokens_out']
  assert all(v == 0 for k, v in counts.items() if k.endswith(('_changed', '_removed')))
  assert cleaner.describe('config.data.train') == 'config.data.train: cleaning off, 7 lines'


def test_one_option_makes_it_active():
  assert clean.Cleaner({'collapse_whitespace': True}).active
  assert clean.Cleaner({'punctuation': 'separate'}).active
  assert clean.Cleaner({'stopwords': 'english'}).active


# ----------------------------------------------------------------------------- each step


def test_nfkc():
  lines = ['ｆｕｌｌ　ｗｉｄｔｈ　１２３', 'ﬁne ﬂow ﬀ', 'x² ① Å', 'plain ascii', 'café']
  assert _clean(lines, nfkc=True) == ['full width 123', 'fine flow ff', 'x2 1 Å',
                                      'plain ascii', 'café']
  cleaner = clean.Cleaner({'nfkc': True})
  cleaner.clean(lines)
  assert cleaner.counts['nfkc_changed'] == 3


def test_strip_html_tags():
  assert _clean(['<p>Hello <b>world</b></p>'], strip_html=True) == [' Hello world ']
  assert _clean(['one<br/>two<BR>three'], strip_html=True) == ['one two three']
  # Inline tags leave nothing, so a word split by them stays one word.
  assert _clean(['W<b>or</b>d <SPAN class="x">ok</SPAN>'], strip_html=True) == ['Word ok']
  # Quoted attribute values may hold '>' and entities.
  line = '<a href="https://x.org/?a=1&amp;b=2" title="a > b">link</a> text'
  assert _clean([line], strip_html=True) == ['link text']


def test_strip_html_nested_and_whole_line_tags():
  line = '<div><ul><li><i>deep</i></li></ul></div>'
  assert _clean([line], strip_html=True) == ['   deep   ']
  lines = ['<img src="a.png" alt="x">', '<br/>', '<!DOCTYPE html>', 'kept']
  assert _clean(lines, strip_html=True) == ['', ' ', '', 'kept']


def test_strip_html_entities_after_tags():
  line = 'Tom &amp; Jerry&#39;s &lt;b&gt; &#x27;q&#x27; a&nbsp;b'
  # Decoded after the tags are gone, so '&lt;b&gt;' is text, not a tag.
  assert _clean([line], strip_html=True) == ["Tom & Jerry's <b> 'q' a\xa0b"]
  # A decoded newline would split the line: it becomes a space.
  assert _clean(['a&#10;b'], strip_html=True) == ['a b']


def test_strip_html_comments_scripts_and_multiline_markup():
  assert _clean(['keep <!-- drop <b>this</b> --> me'], strip_html=True) == ['keep  me']
  lines = ['before', '<script type="text/javascript">', 'var x = 1 < 2 && y > 3;',
           '</script>', '<style>p { color: red; }</style>after', '<a', 'href="x">t</a>',
           '<!-- a', 'comment -->end']
  assert _clean(lines, strip_html=True) == ['before', '', '', '', 'after', '', 't', '', 'end']


def test_strip_html_leaves_non_tags():
  lines = ['a < b and c > d', '3<4 and 5>4', 'x <- y', '<3 love']
  assert _clean(lines, strip_html=True) == lines


def test_lowercase():
  assert _clean(['ÉCOLE Été', 'ΣΟΦΙΑ', 'already lower', 'ＡＢ'], lowercase=True) == [
      'école été', 'σοφια', 'already lower', 'ａｂ']


def test_punctuation_strip():
  lines = ['«Bonjour», dit-il — enfin!', "don't ¿Qué? 「引用」。", '$5 + 3 = 8', 'a @-@ b']
  # Symbols ($ + = < >) are category S, not punctuation, and stay.
  assert _clean(lines, punctuation='strip') == [
      'Bonjour ditil  enfin', 'dont Qué 引用', '$5 + 3 = 8', 'a  b']
  cleaner = clean.Cleaner({'punctuation': 'strip'})
  cleaner.clean(lines)
  assert cleaner.counts['punctuation_removed'] == 2  # '—' and '@-@'.
  assert cleaner.counts['punctuation_changed'] == 3


def test_punctuation_separate():
  line = '«Bonjour», dit-il — enfin!'
  out, = _clean([line], punctuation='separate')
  assert out == ' « Bonjour »  ,  dit - il  —  enfin ! '
  assert out.split() == ['«', 'Bonjour', '»', ',', 'dit', '-', 'il', '—', 'enfin', '!']
  assert _clean(['...'], punctuation='separate')[0].split() == ['.', '.', '.']
  assert _clean(['$5+3'], punctuation='separate') == ['$5+3']


def test_collapse_whitespace():
  lines = ['\tTabs\tand  spaces ', 'no\xa0break\u3000ideographic\u2009thin', '   ', 'ok']
  assert _clean(lines, collapse_whitespace=True) == [
      'Tabs and spaces', 'no break ideographic thin', '', 'ok']


def test_english_stopwords():
  lines = ['The cat sat on the mat', 'a\tcat  the  dog', '  the end ', 'go to', 'cat\tthe',
           'The, cat', 'THEY WERE HERE']
  assert _clean(lines, stopwords='english') == [
      'cat sat mat',
      'cat  dog',  # The rest keeps its spacing.
      '  end ',
      'go',
      'cat',
      'The, cat',  # 'The,' is not 'the': punctuation is off.
      '',
  ]


def test_english_stopword_list():
  words = clean.ENGLISH_STOPWORDS
  assert isinstance(words, tuple)
  assert 150 <= len(words) <= 200
  assert len(set(words)) == len(words)
  assert all(w == w.lower() and w.isalpha() for w in words)
  assert {'the', 'a', 'of', 'and', 'is', 'were', 'she', 'between'} <= set(words)


def test_stopword_file(tmp_path):
  path = tmp_path / 'stop.txt'
  path.write_text('# my list\nFoo\n  BAR  # trailing comment\n\nbaz qux\n#zap\n', 'utf-8')
  cleaner = clean.Cleaner({'stopwords': str(path)})
  assert cleaner.clean(['foo Bar BAZ quux QUX', 'zap #zap']) == ['quux', 'zap #zap']
  assert cleaner.counts['stopwords_removed'] == 4
  assert f'stopwords ({path}) removed 4 tokens' in cleaner.describe('x')


# ----------------------------------------------------------------------------- order, counts


def test_order_of_steps():
  options = {'stopwords': 'english', 'lowercase': True, 'strip_html': True}
  # strip_html, then lowercase, then stop words, whatever the order of the keys.
  assert _clean(['<B>The</B> Cat'], **options) == ['cat']
  assert _clean(['<B>The</B> Cat'], **dict(reversed(options.items()))) == ['cat']
  # NFKC first: full-width markup becomes markup, then goes.
  assert _clean(['＜ｂ＞x＜／ｂ＞'], nfkc=True, strip_html=True) == ['x']
  # Punctuation before stop words; whitespace last.
  assert _clean(['The, end .'], punctuation='strip', stopwords='english') == ['end ']
  assert _clean(['The, end .'], punctuation='strip', stopwords='english',
                collapse_whitespace=True) == ['end']
  # html entities are decoded before punctuation: '&amp;' leaves no letters behind.
  assert _clean(['fish &amp; chips'], strip_html=True, punctuation='strip') == ['fish  chips']


def test_counts_exact():
  lines = ['The Cat , the HAT .', '', '<i>A</i> dog  runs', 'ﬁne']
  cleaner = clean.Cleaner(ml_collections.ConfigDict({
      'nfkc': True, 'strip_html': True, 'lowercase': True, 'punctuation': 'strip',
      'stopwords': 'english', 'collapse_whitespace': True}))
  assert cleaner.clean(lines) == ['cat hat', '', 'dog runs', 'fine']
  assert cleaner.counts == {
      'lines': 4, 'tokens_in': 10, 'tokens_out': 5,
      'nfkc_changed': 1,  # 'ﬁne'
      'html_changed': 1,  # '<i>A</i> …'
      'lowercase_changed': 2,  # lines 1 and 3
      'punctuation_changed': 1, 'punctuation_removed': 2,  # ',' and '.'
      'stopwords_removed': 3,  # the, the, a
      'whitespace_changed': 2,  # 'cat  hat ', 'dog  runs'
  }
  assert cleaner.describe('config.data.train') == (
      'config.data.train: cleaned 4 lines: nfkc changed 1 lines, html changed 1 lines, '
      'lowercase changed 2 lines, punctuation (strip) removed 2 tokens, stopwords (english) '
      'removed 3 tokens, whitespace changed 2 lines; 10 -> 5 tokens')
  # Counts are those of the last call.
  cleaner.clean(['the the the'] * 1234)
  assert cleaner.counts['stopwords_removed'] == 3702
  assert cleaner.counts['lowercase_changed'] == 0
  assert 'removed 3,702 tokens' in cleaner.describe('x')
  assert '3,702 -> 0 tokens' in cleaner.describe('x')


def test_separate_then_split_never_mixes_punctuation_and_letters():
  rng = random.Random(0)
  alphabet = ('abcXYZéÉßøΣσжЖ漢字かな' '0123456789' '.,;:!?\'"()[]{}-_/\\@#%&*'
              '—–‐«»‹›“”‘’¿¡。、「」・…' '$+=<>^`|~€©' ' \t\xa0\u3000\u2009' '\u0301')
  cleaner = clean.Cleaner({'punctuation': 'separate'})
  lines = [''.join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
           for _ in range(500)]
  out = cleaner.clean(lines)
  assert len(out) == len(lines)
  for before, after in zip(lines, out):
    for token in after.split():
      punct = [c for c in token if unicodedata.category(c).startswith('P')]
      if punct:
        assert token == punct[0], (before, token)  # One punctuation character alone.
    # Nothing but whitespace was added.
    assert ''.join(after.split()) == ''.join(before.split())


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize('config, field', [
    ({'lower_case': True}, 'config.data.clean.lower_case'),
    ({'lowercase': 'yes'}, 'config.data.clean.lowercase'),
    ({'nfkc': 1}, 'config.data.clean.nfkc'),
    ({'strip_html': None}, 'config.data.clean.strip_html'),
    ({'collapse_whitespace': 'true'}, 'config.data.clean.collapse_whitespace'),
    ({'punctuation': 'remove'}, 'config.data.clean.punctuation'),
    ({'punctuation': True}, 'config.data.clean.punctuation'),
    ({'stopwords': True}, 'config.data.clean.stopwords'),
    (ml_collections.ConfigDict({'punctuation': 'Strip'}), 'config.data.clean.punctuation'),
])
def test_bad_options(config, field):
  _user_error(clean.Cleaner, config, needles=[field])


def test_config_not_a_mapping():
  _user_error(clean.Cleaner, 'lowercase', needles=['config.data.clean must be a mapping'])


def test_bad_stopword_files(tmp_path):
  field = 'config.data.clean.stopwords'
  missing = str(tmp_path / 'missing.txt')
  _user_error(clean.Cleaner, {'stopwords': missing}, needles=[field, missing, 'not found'])
  _user_error(clean.Cleaner, {'stopwords': str(tmp_path)},
              needles=[field, str(tmp_path), 'directory'])
  for name, data in [('empty.txt', b''), ('comments.txt', b'# only\n\n   # comments\n'),
                     ('latin1.txt', b'caf\xe9\n')]:
    path = tmp_path / name
    path.write_bytes(data)
    _user_error(clean.Cleaner, {'stopwords': str(path)}, needles=[field, str(path)])


def test_empty_after_cleaning():
  cleaner = clean.Cleaner({'stopwords': 'english'})
  lines = cleaner.clean(['The', 'a', '  '])
  assert lines == ['', '', '  ']
  message = _user_error(cleaner.check_not_empty, lines, 'config.data.train',
                        needles=['config.data.train'])
  assert message == ('config.data.train: empty after cleaning (cleaned 3 lines: stopwords '
                     '(english) removed 2 tokens; 2 -> 0 tokens)')
  _user_error(cleaner.check_not_empty, cleaner.clean([]), 'config.data.valid',
              needles=['config.data.valid: empty after cleaning'])
  cleaner.check_not_empty(cleaner.clean(['The cat']), 'config.data.train')  # Passes.
