"""Reliability: bad input gives one clear line and touches nothing; crashes
and signals lose nothing; evaluation survives checkpoint rotation."""

import glob
import hashlib
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

import cifar_testdata
from cifar_testdata import run_script, start_script

ERROR_LINE = re.compile(r'^(cifar10_\w+\.py): error: (.+)$')


def _snapshot(*dirs):
  """{path: sha256} of every file under `dirs`."""
  files = {}
  for top in dirs:
    for root, _, names in os.walk(top):
      for name in names:
        path = os.path.join(root, name)
        with open(path, 'rb') as f:
          files[path] = hashlib.sha256(f.read()).hexdigest()
  return files


def _one_line_error(proc, script, status=None):
  """The message of a failed script, checked to be its only stderr line
  from the suite, with no traceback."""
  assert proc.returncode != 0 if status is None else proc.returncode == status
  assert 'Traceback' not in proc.stderr
  lines = [l for l in proc.stderr.splitlines() if ERROR_LINE.match(l)]
  assert len(lines) == 1, proc.stderr
  name, message = ERROR_LINE.match(lines[0]).groups()
  assert name == script
  return message


@pytest.fixture(scope='module')
def checkpoint(data_dir, tmp_path_factory):
  """A --train_dir trained for 2 steps."""
  train_dir = str(tmp_path_factory.mktemp('trained'))
  run_script('cifar10_train.py', '--data_dir=%s' % data_dir[0],
             '--train_dir=%s' % train_dir, '--batch_size=8', '--max_steps=2',
             check=0)
  return train_dir


@pytest.mark.parametrize('form', ['=', ' ', 'nested'])
def test_binary_flagfile(tmp_path, form):
  flagfile = tmp_path / 'flags.png'
  flagfile.write_bytes(b'\x89PNG\r\n\x1a\n' + bytes(range(256)))
  text = tmp_path / 'flags.txt'
  text.write_text('--run_once\n')
  args = (['--flagfile=%s' % text, '--flagfile=%s' % flagfile] if form == '='
          else ['--flagfile', str(flagfile)] if form == ' ' else
          ['--flagfile=%s' % text])
  if form == 'nested':
    # Named inside another flagfile: the file on the command line is text.
    text.write_text('--flagfile=%s\n' % flagfile)
  proc = run_script('cifar10_eval.py', *args)
  assert _one_line_error(proc, 'cifar10_eval.py', 2).startswith(
      '--flagfile=%s is not a text file of flags (' % flagfile)


@pytest.mark.parametrize('script,args,status,message', [
    ('cifar10_train.py', ['--max_step=5'], 2,
     "Unknown command line flag 'max_step'. Did you mean: max_steps ?"),
    # Without its dashes a flag was ignored as silently.
    ('cifar10_train.py', ['max_steps=5'], 2,
     "unexpected argument 'max_steps=5': flags are written --name=value"),
    ('cifar10_eval.py', ['run_once'], 2, "unexpected argument 'run_once'"),
    ('cifar10_multi_gpu_train.py', ['2'], 2, "unexpected argument '2'"),
    ('cifar10_benchmark.py', ['smoke'], 2, "unexpected argument 'smoke'"),
    ('cifar10_train.py', ['--batch_size=0'], 2,
     'flag --batch_size=0: --batch_size must be a positive integer'),
    ('cifar10_train.py', ['--batch_size=-3'], 2,
     'flag --batch_size=-3: --batch_size must be a positive integer'),
    ('cifar10_train.py', ['--max_steps=-1'], 2,
     'flag --max_steps=-1: --max_steps must not be negative'),
    # Past int64, TensorFlow failed with an OverflowError traceback.
    ('cifar10_train.py', ['--log_frequency=99999999999999999999'], 2,
     'flag --log_frequency=99999999999999999999: --log_frequency must be a '
     'positive integer, at most 2147483647'),
    ('cifar10_train.py', ['--save_checkpoint_steps=2147483648'], 2,
     'flag --save_checkpoint_steps=2147483648: --save_checkpoint_steps must '
     'not be negative, nor above 2147483647'),
    ('cifar10_eval.py', ['--batch_size=99999999999999999999'], 2,
     'flag --batch_size=99999999999999999999: --batch_size must be a '
     'positive integer, at most 2147483647'),
    ('cifar10_train.py', ['--log_device_placement=maybe'], 2,
     'flag --log_device_placement=maybe'),
    ('cifar10_multi_gpu_train.py', ['--num_gpus=0'], 2,
     'flag --num_gpus=0: --num_gpus must be a positive integer'),
    ('cifar10_eval.py', ['--eval_data=foo'], 2,
     'flag --eval_data=foo: value should be one of <test|train_eval>'),
    ('cifar10_eval.py', ['--num_examples=0'], 2,
     'flag --num_examples=0: --num_examples must be a positive integer'),
    # More than any machine's memory: refused before anything is written,
    # not a segmentation fault minutes later.
    ('cifar10_train.py', ['--batch_size=100000000'], 2,
     '--batch_size=100000000 x 1 tower(s) needs about 100000 GB of memory '
     'to train on the CPU'),
    # Checked before anything runs, by name.
    ('cifar10_train.py', ['--data_sha256=xyz'], 2,
     "flag --data_sha256=xyz: expected SHA-256 'xyz' is not 64 hexadecimal "
     'digits'),
    ('cifar10_train.py', ['--data_url=ftp://example.com/c.tar.gz'], 2,
     "flag --data_url=ftp://example.com/c.tar.gz: unsupported data URL "
     "'ftp://example.com/c.tar.gz'"),
    # As when set from an unset shell variable: training would save nothing.
    ('cifar10_train.py', ['--train_dir='], 2,
     'flag --train_dir=: --train_dir must not be empty'),
    ('cifar10_eval.py', ['--checkpoint_dir='], 2,
     'flag --checkpoint_dir=: --checkpoint_dir must not be empty'),
    # Its checkpoints would be saved, and never found again.
    ('cifar10_train.py', ['--train_dir=/tmp/cifar10_train[1]'], 2,
     'flag --train_dir=/tmp/cifar10_train[1]: --train_dir must not hold *, '
     '?, [ or \\, which TensorFlow takes for a file name pattern when it '
     'reads checkpoints'),
    ('cifar10_eval.py', ['--checkpoint_dir=/tmp/a\\b'], 2,
     'flag --checkpoint_dir=/tmp/a\\b: --checkpoint_dir must not hold'),
    # A byte that is not UTF-8 (here 0xff), which TensorFlow's file
    # functions failed on with a message naming neither flag nor path.
    ('cifar10_train.py', ['--train_dir=/tmp/t\udcff'], 2,
     'flag --train_dir=/tmp/t\\udcff: --train_dir must be a UTF-8 path: the '
     'scripts pass paths to TensorFlow as text'),
    ('cifar10_train.py', ['--data_dir=/tmp/d\udcff'], 2,
     'flag --data_dir=/tmp/d\\udcff: --data_dir must be a UTF-8 path'),
])
def test_bad_flags(tmp_path, script, args, status, message):
  proc = run_script(script, '--data_dir=%s' % tmp_path,
                    '--train_dir=%s' % tmp_path, *args) if (
                        script != 'cifar10_eval.py') else run_script(
                            script, '--data_dir=%s' % tmp_path, *args)
  assert _one_line_error(proc, script, status).startswith(message)
  assert os.listdir(str(tmp_path)) == []


@pytest.mark.parametrize('script,flag', [
    ('cifar10_train.py', '--help'), ('cifar10_eval.py', '-?'),
    ('cifar10_multi_gpu_train.py', '--helpshort'),
    ('cifar10_predict.py', '--help'), ('cifar10_export.py', '--help'),
    ('cifar10_benchmark.py', '--helpfull')])
def test_help_is_no_error(tmp_path, script, flag):
  """absl exits with status 1 after the help; `make benchmark ARGS=--help`
  then failed."""
  proc = run_script(script, flag, env={'TMPDIR': str(tmp_path)})
  assert proc.returncode == 0, proc.stderr
  # The usage, then the script's own flags.
  assert re.search(r'^flags:\n\n(.*/)?%s:\n  --' % re.escape(script),
                   proc.stdout, re.M), proc.stdout
  assert os.listdir(str(tmp_path)) == []


def _broken_data_dir(tmp_path, data_dir, break_it):
  root = str(tmp_path / 'data')
  shutil.copytree(data_dir[0], root)
  batches = os.path.join(root, cifar_testdata.BATCHES_DIR)
  break_it(batches)
  return root, batches


@pytest.mark.parametrize('case,expected', [
    ('missing', r'data_batch_3\.bin'),
    ('empty', r'data_batch_3\.bin'),
    ('truncated', r'data_batch_3\.bin'),
    ('directory', r'data_batch_3\.bin: a directory'),
])
def test_bad_data_dir_for_training(data_dir, tmp_path, case, expected):
  def break_it(batches):
    path = os.path.join(batches, 'data_batch_3.bin')
    if case in ('missing', 'directory'):
      os.remove(path)
      if case == 'directory':
        os.mkdir(path)
    else:
      with open(path, 'r+b') as f:
        f.truncate(0 if case == 'empty' else 3073 * 4 + 100)
  root, batches = _broken_data_dir(tmp_path, data_dir, break_it)
  before = _snapshot(root)
  train_dir = str(tmp_path / 'train')
  proc = run_script('cifar10_train.py', '--data_dir=%s' % root,
                    '--train_dir=%s' % train_dir, '--max_steps=1',
                    '--data_url=file:///nonexistent/cifar-10-binary.tar.gz')
  assert re.search(expected, _one_line_error(proc, 'cifar10_train.py'))
  assert _snapshot(root) == before
  assert not os.path.exists(train_dir) or not os.listdir(train_dir)


@pytest.mark.parametrize('case', ['wrong_size_test_file', 'empty_test_file',
                                  'no_data'])
def test_bad_data_dir_for_eval(data_dir, checkpoint, tmp_path, case):
  if case == 'no_data':
    root = str(tmp_path / 'empty')
    os.makedirs(root)
    expected = r'no CIFAR-10 data in %s.*download' % re.escape(
        os.path.join(root, cifar_testdata.BATCHES_DIR))
  elif case == 'empty_test_file':
    def empty_it(batches):
      open(os.path.join(batches, 'test_batch.bin'), 'wb').close()
    root, _ = _broken_data_dir(tmp_path, data_dir, empty_it)
    expected = r'^bad CIFAR-10 file \S*test_batch\.bin: empty$'
  else:
    def break_it(batches):
      with open(os.path.join(batches, 'test_batch.bin'), 'ab') as f:
        f.write(b'\0' * 10)
    root, _ = _broken_data_dir(tmp_path, data_dir, break_it)
    expected = r'test_batch\.bin: 921910 bytes is not a whole number'
  before = _snapshot(root, checkpoint)
  proc = run_script('cifar10_eval.py', '--data_dir=%s' % root,
                    '--checkpoint_dir=%s' % checkpoint, '--run_once',
                    '--eval_dir=%s' % (tmp_path / 'eval'))
  assert re.search(expected, _one_line_error(proc, 'cifar10_eval.py'))
  assert _snapshot(root, checkpoint) == before


@pytest.mark.parametrize('script', ['cifar10_train.py', 'cifar10_eval.py'])
def test_label_outside_0_to_9(data_dir, checkpoint, tmp_path, script):
  """Records with label byte 200: not CIFAR-10 data. One line naming the
  file and the first such record, not an index error from deep inside."""
  train = script == 'cifar10_train.py'
  # From record 3 of the test file, or of the last three training files
  # (the first training batch then has some, but for a chance of 1e-6).
  broken = cifar_testdata.TRAIN_FILES[2:] if train else ['test_batch.bin']

  def break_it(batches):
    for name in broken:
      path = os.path.join(batches, name)
      with open(path, 'rb') as f:
        data = bytearray(f.read())
      data[3 * 3073::3073] = b'\xc8' * (len(data) // 3073 - 3)
      with open(path, 'wb') as f:
        f.write(data)
  root, batches = _broken_data_dir(tmp_path, data_dir, break_it)
  before = _snapshot(root, checkpoint)
  args = (['--train_dir=%s' % (tmp_path / 'train'), '--max_steps=1',
           '--batch_size=16'] if train else
          ['--checkpoint_dir=%s' % checkpoint, '--run_once',
           '--num_examples=300', '--eval_dir=%s' % (tmp_path / 'eval')])
  proc = run_script(script, '--data_dir=%s' % root, *args)
  assert _one_line_error(proc, script, 1) == (
      'bad CIFAR-10 data in %s: record 3 (counting from 0) has label 200, '
      'not 0-9'
      % os.path.join(batches, broken[0]))
  assert _snapshot(root, checkpoint) == before


@pytest.mark.parametrize('payload,expected', [
    (b'\x1f\x8b\x08\x00' + b'garbage' * 100, r'corrupt|gzip'),
    ('not_tar', r'tar archive'),
    ('traversal', r'\.\./'),
    ('absolute', r'/etc/'),
    ('symlink', r'link'),
])
def test_bad_tarball(tmp_path, payload, expected):
  import gzip  # pylint: disable=g-import-not-at-top
  if payload == 'not_tar':
    payload = gzip.compress(b'hello, this is not a tar archive' * 100)
  elif payload == 'traversal':
    payload = cifar_testdata.tarball_bytes([('../escaped.bin', b'x' * 3073)])
  elif payload == 'absolute':
    payload = cifar_testdata.tarball_bytes([('/etc/escaped.bin', b'x' * 3073)])
  elif payload == 'symlink':
    import io, tarfile  # pylint: disable=g-import-not-at-top,multiple-imports
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode='w:gz') as tar:
      info = tarfile.TarInfo('cifar-10-batches-bin/data_batch_1.bin')
      info.type = tarfile.SYMTYPE
      info.linkname = '/etc/passwd'
      tar.addfile(info)
    payload = buf.getvalue()
  source = tmp_path / 'mirror' / 'cifar-10-binary.tar.gz'
  source.parent.mkdir()
  source.write_bytes(payload)
  data = tmp_path / 'data'
  proc = run_script('cifar10_train.py', '--data_dir=%s' % data,
                    '--train_dir=%s' % (tmp_path / 'train'),
                    '--data_url=file://%s' % source,
                    '--data_sha256=%s' % hashlib.sha256(payload).hexdigest())
  assert re.search(expected, _one_line_error(proc, 'cifar10_train.py'))
  assert not (data / cifar_testdata.BATCHES_DIR).exists()
  assert not (tmp_path / 'escaped.bin').exists()
  assert source.read_bytes() == payload


def test_training_downloads_from_a_mirror(tmp_path):
  payload = cifar_testdata.dataset_tarball(train_per_file=16, test_records=40)
  source = tmp_path / 'cifar-10-binary.tar.gz'
  source.write_bytes(payload)
  proc = run_script('cifar10_train.py', '--data_dir=%s' % (tmp_path / 'data'),
                    '--train_dir=%s' % (tmp_path / 'train'),
                    '--data_url=file://%s' % source, '--batch_size=8',
                    '--max_steps=1',
                    '--data_sha256=%s' % hashlib.sha256(payload).hexdigest(),
                    check=0)
  assert 'CIFAR-10 data ready in' in proc.stdout
  assert (tmp_path / 'data' / cifar_testdata.BATCHES_DIR /
          'test_batch.bin').stat().st_size == 40 * 3073


@pytest.mark.parametrize('script, flag', [('cifar10_train.py', 'train_dir'),
                                          ('cifar10_eval.py', 'eval_dir')])
def test_data_dir_one_level_too_deep(tmp_path, data_dir, script, flag):
  """--data_dir naming cifar-10-batches-bin itself: an error that gives the
  right value, not a second download into it."""
  batches = tmp_path / cifar_testdata.BATCHES_DIR
  shutil.copytree(data_dir[1], str(batches))
  before = sorted(os.listdir(str(batches)))
  proc = run_script(script, '--data_dir=%s' % batches,
                    '--%s=%s' % (flag, tmp_path / 'out'),
                    '--data_url=http://127.0.0.1:9/cifar-10-binary.tar.gz',
                    env={'CIFAR10_DOWNLOAD_RETRY_SECONDS': '0.05'})
  assert _one_line_error(proc, script, 2) == (
      '--data_dir=%s holds the CIFAR-10 .bin files itself: give the '
      'directory above it, --data_dir=%s' % (batches, tmp_path))
  assert sorted(os.listdir(str(batches))) == before


def test_offline_names_url_and_manual_path(tmp_path):
  proc = run_script('cifar10_train.py', '--data_dir=%s' % (tmp_path / 'data'),
                    '--train_dir=%s' % (tmp_path / 'train'),
                    '--data_url=http://127.0.0.1:9/cifar-10-binary.tar.gz',
                    env={'CIFAR10_DOWNLOAD_RETRY_SECONDS': '0.05'})
  message = _one_line_error(proc, 'cifar10_train.py')
  assert 'http://127.0.0.1:9/cifar-10-binary.tar.gz' in message
  assert str(tmp_path / 'data' / 'cifar-10-binary.tar.gz') in message


@pytest.mark.parametrize('case', ['empty', 'missing'])
def test_eval_checkpoint_dir_empty_or_missing(data_dir, tmp_path, case):
  checkpoint_dir = tmp_path / 'ckpt'
  if case == 'empty':
    checkpoint_dir.mkdir()
  proc = run_script('cifar10_eval.py', '--data_dir=%s' % data_dir[0],
                    '--checkpoint_dir=%s' % checkpoint_dir, '--run_once',
                    '--num_examples=300', '--eval_dir=%s' % (tmp_path / 'e'))
  assert _one_line_error(proc, 'cifar10_eval.py') == (
      'no checkpoint in --checkpoint_dir=%s%s'
      % (checkpoint_dir, {'empty': '', 'missing': ': no such directory'}[case]))


@pytest.mark.parametrize('run_once', [True, False])
def test_eval_checkpoint_dir_a_file(data_dir, tmp_path, run_once):
  """Refused at once: watching, the evaluator used to wait for ever."""
  checkpoint_dir = tmp_path / 'ckpt'
  checkpoint_dir.write_bytes(b'not a directory')
  proc = run_script('cifar10_eval.py', '--data_dir=%s' % data_dir[0],
                    '--checkpoint_dir=%s' % checkpoint_dir,
                    '--run_once=%s' % run_once, '--eval_interval_secs=1',
                    '--num_examples=300', '--eval_dir=%s' % (tmp_path / 'e'),
                    timeout=60)
  assert _one_line_error(proc, 'cifar10_eval.py', 2) == (
      '--checkpoint_dir=%s is a file, not a directory' % checkpoint_dir)
  assert checkpoint_dir.read_bytes() == b'not a directory'


def test_eval_dir_must_not_be_the_checkpoint_dir(data_dir, checkpoint):
  """Training's --fresh removes the event files in its directory, and
  TensorBoard would show one run of both."""
  before = _snapshot(checkpoint)
  proc = run_script('cifar10_eval.py', '--data_dir=%s' % data_dir[0],
                    '--checkpoint_dir=%s' % checkpoint, '--run_once',
                    '--eval_dir=%s/' % checkpoint)
  assert _one_line_error(proc, 'cifar10_eval.py', 2).startswith(
      '--eval_dir=%s/ is --checkpoint_dir: ' % checkpoint)
  assert _snapshot(checkpoint) == before


def _other_model_checkpoint(directory):
  """A checkpoint whose conv1 has 32 filters instead of 64."""
  with tf.Graph().as_default():
    variables = {'global_step': tf.Variable(7, dtype=tf.int64,
                                            name='global_step')}
    for name in ('conv1/weights', 'conv1/weights/ExponentialMovingAverage'):
      variables[name] = tf.Variable(tf.zeros([5, 5, 3, 32]), name=name)
    with tf.Session() as sess:
      sess.run(tf.global_variables_initializer())
      tf.train.Saver(variables).save(sess, os.path.join(directory,
                                                        'model.ckpt'), 7)


@pytest.mark.parametrize('script', ['cifar10_train.py', 'cifar10_eval.py'])
def test_checkpoint_of_another_model(data_dir, tmp_path, script):
  other = str(tmp_path / 'other')
  _other_model_checkpoint(other)
  before = _snapshot(other)
  args = (['--train_dir=%s' % other, '--max_steps=10'] if script ==
          'cifar10_train.py' else ['--checkpoint_dir=%s' % other, '--run_once',
                                   '--num_examples=300',
                                   '--eval_dir=%s' % (tmp_path / 'e')])
  proc = run_script(script, '--data_dir=%s' % data_dir[0], *args)
  message = _one_line_error(proc, script)
  assert re.search(r'model\.ckpt-7 was written by a different model: '
                   r'variable conv1/weights(/ExponentialMovingAverage)? has '
                   r'shape \[5, 5, 3, 32\] there but \[5, 5, 3, 64\] here',
                   message), message
  after = _snapshot(other)
  # The trainer's (empty) lock file is all it adds.
  after.pop(os.path.join(other, '.cifar10-train.lock'), None)
  assert after == before


@pytest.mark.parametrize('script', ['cifar10_train.py', 'cifar10_eval.py'])
def test_checkpoint_without_global_step(data_dir, checkpoint, tmp_path,
                                        script):
  """Every variable but the global step (weights saved by another program):
  an error, not taken for a checkpoint that the trainer deleted (which the
  evaluator skips, successfully)."""
  other = str(tmp_path / 'other')
  reader = tf.train.load_checkpoint(checkpoint)
  with tf.Graph().as_default():
    copies = [tf.Variable(reader.get_tensor(name), name=name)
              for name in reader.get_variable_to_shape_map()
              if name != 'global_step']
    with tf.Session() as sess:
      sess.run(tf.global_variables_initializer())
      tf.train.Saver(copies).save(sess, os.path.join(other, 'model.ckpt-7'))
  args = (['--train_dir=%s' % other, '--max_steps=10'] if script ==
          'cifar10_train.py' else ['--checkpoint_dir=%s' % other, '--run_once',
                                   '--num_examples=300',
                                   '--eval_dir=%s' % (tmp_path / 'e')])
  proc = run_script(script, '--data_dir=%s' % data_dir[0], *args)
  assert _one_line_error(proc, script, 1) == (
      'checkpoint %s has no variable global_step: it was written by a '
      'different model' % os.path.join(other, 'model.ckpt-7'))


def _copy_with_relative_state(train_dir, copy):
  """A copy of a --train_dir whose state file names its own checkpoints (a
  plain copy's names the original's, by absolute paths)."""
  shutil.copytree(train_dir, copy)
  os.remove(os.path.join(copy, 'checkpoint'))
  tf.train.update_checkpoint_state(copy, 'model.ckpt-2', ['model.ckpt-2'])


@pytest.mark.parametrize('script', ['cifar10_train.py', 'cifar10_eval.py'])
@pytest.mark.parametrize('damage', ['truncated data', 'garbled index'])
def test_damaged_checkpoint(data_dir, checkpoint, tmp_path, script, damage):
  damaged = str(tmp_path / 'damaged')
  _copy_with_relative_state(checkpoint, damaged)
  if damage == 'truncated data':
    # The largest shard holds the weights.
    path = max(glob.glob(os.path.join(damaged, 'model.ckpt-2.data-*')),
               key=os.path.getsize)
    with open(path, 'r+b') as f:
      f.truncate(os.path.getsize(path) // 2)
  else:
    with open(os.path.join(damaged, 'model.ckpt-2.index'), 'wb') as f:
      f.write(b'\x01' * 300)
  before = _snapshot(damaged)
  args = (['--train_dir=%s' % damaged, '--max_steps=4'] if script ==
          'cifar10_train.py' else ['--checkpoint_dir=%s' % damaged,
                                   '--run_once', '--num_examples=300',
                                   '--eval_dir=%s' % (tmp_path / 'e')])
  proc = run_script(script, '--data_dir=%s' % data_dir[0], *args)
  message = _one_line_error(proc, script, 1)
  assert message.startswith('cannot read checkpoint %s (' % os.path.join(
      damaged, 'model.ckpt-2')), message
  assert message.endswith('): move its files away to use the one before')
  assert _snapshot(damaged) == before


# State files that are not one, as TensorFlow reads them: not text (it raised
# UnicodeDecodeError), empty (ValueError), text it cannot parse (a warning).
_DAMAGED_STATE = {'binary': b'\xb2\x89PNG' * 50, 'empty': b'',
                  'garbage': b'not a state file\n'}


@pytest.mark.parametrize('state', ['missing', 'moved', 'copied', 'binary',
                                   'empty'])
def test_training_resumes_without_a_valid_state_file(data_dir, checkpoint,
                                                     tmp_path, state):
  """TensorFlow's 'checkpoint' file holds absolute paths. Copied without it,
  or moved (its paths point to files that are gone), training must resume,
  not start over and overwrite the checkpoints. Copied (its paths point to
  the original): training must resume from the copy's checkpoints, and not
  delete the original's as it keeps only the newest five."""
  original = str(tmp_path / 'original')
  shutil.copytree(checkpoint, original)
  tf.train.update_checkpoint_state(
      original, os.path.join(original, 'model.ckpt-2'),
      [os.path.join(original, 'model.ckpt-0'),
       os.path.join(original, 'model.ckpt-2')])
  train_dir = str(tmp_path / 'train')
  shutil.copytree(original, train_dir)
  if state == 'missing':
    os.remove(os.path.join(train_dir, 'checkpoint'))
  elif state in _DAMAGED_STATE:
    with open(os.path.join(train_dir, 'checkpoint'), 'wb') as f:
      f.write(_DAMAGED_STATE[state])
  elif state == 'moved':
    shutil.rmtree(original)
  originals = _snapshot(original)
  proc = run_script('cifar10_train.py', '--data_dir=%s' % data_dir[0],
                    '--train_dir=%s' % train_dir, '--batch_size=8',
                    '--max_steps=8', '--save_checkpoint_steps=1', check=0)
  assert ('%s does not name the checkpoints in %s (it is %s): rewriting it '
          'to list the newest 2 there' % (
              os.path.join(train_dir, 'checkpoint'), train_dir,
              'missing, damaged or stale' if state != 'copied' else
              'from the directory this one was copied or moved from, %s'
              % original)) in proc.stdout
  assert re.search(r'resuming from %s \(step 2\)' % re.escape(
      os.path.join(train_dir, 'model.ckpt-2')), proc.stdout)
  assert tf.train.get_checkpoint_state(train_dir).model_checkpoint_path == (
      os.path.join(train_dir, 'model.ckpt-8'))
  assert _snapshot(original) == originals


def test_rewritten_state_file_leaves_older_checkpoints_alone(data_dir,
                                                            tmp_path):
  """Rewritten, the state file lists the newest five checkpoints only, as
  TensorFlow's does: rotation then deletes none of the older ones."""
  train_dir, aside = str(tmp_path / 'train'), str(tmp_path / 'aside')
  args = ['--data_dir=%s' % data_dir[0], '--train_dir=%s' % train_dir,
          '--batch_size=8', '--save_checkpoint_steps=1']
  run_script('cifar10_train.py', *args, '--max_steps=4', check=0)
  shutil.copytree(train_dir, aside)  # Checkpoints 0 to 4.
  run_script('cifar10_train.py', *args, '--max_steps=9', check=0)
  for name in os.listdir(aside):
    if name.startswith('model.ckpt-'):
      shutil.copy(os.path.join(aside, name), train_dir)
  os.remove(os.path.join(train_dir, 'checkpoint'))
  older = {path: digest for path, digest in _snapshot(train_dir).items()
           if re.search(r'model\.ckpt-[0-4]\.', path)}
  proc = run_script('cifar10_train.py', *args, '--max_steps=11', check=0)
  assert 'rewriting it to list the newest 5 there' in proc.stdout
  assert re.search(r'resuming from .*model\.ckpt-9 \(step 9\)', proc.stdout)
  after = _snapshot(train_dir)
  assert {path: after.get(path) for path in older} == older


def test_state_file_naming_only_gone_checkpoints_is_refused(data_dir,
                                                            tmp_path):
  """TensorFlow would fail to restore it, saying 'not a valid checkpoint'."""
  train_dir = tmp_path / 'train'
  train_dir.mkdir()
  state_file = train_dir / 'checkpoint'
  state_file.write_text(
      'model_checkpoint_path: "/nonexistent/old/model.ckpt-5"\n')
  proc = run_script('cifar10_train.py', '--data_dir=%s' % data_dir[0],
                    '--train_dir=%s' % train_dir, '--max_steps=1')
  assert _one_line_error(proc, 'cifar10_train.py', 2) == (
      '%s names /nonexistent/old/model.ckpt-5, which is gone, and '
      '--train_dir=%s holds no checkpoint: remove %s to start over'
      % (state_file, train_dir, state_file))


@pytest.mark.parametrize('state', sorted(_DAMAGED_STATE))
def test_damaged_state_file_without_checkpoints_is_refused(data_dir, tmp_path,
                                                          state):
  """Nothing to resume, and the file may not be TensorFlow's: training
  would overwrite it."""
  train_dir = tmp_path / 'train'
  train_dir.mkdir()
  state_file = train_dir / 'checkpoint'
  state_file.write_bytes(_DAMAGED_STATE[state])
  proc = run_script('cifar10_train.py', '--data_dir=%s' % data_dir[0],
                    '--train_dir=%s' % train_dir, '--max_steps=1')
  assert _one_line_error(proc, 'cifar10_train.py', 2) == (
      '%s is not a checkpoint state file, and --train_dir=%s holds no '
      'checkpoint: move it away to start over' % (state_file, train_dir))
  assert state_file.read_bytes() == _DAMAGED_STATE[state]


@pytest.mark.parametrize('state', ['binary', 'empty'])
def test_readers_find_checkpoints_past_a_damaged_state_file(checkpoint,
                                                           tmp_path, state):
  import cifar10_cli  # pylint: disable=g-import-not-at-top
  copy = str(tmp_path / 'copy')
  shutil.copytree(checkpoint, copy)
  with open(os.path.join(copy, 'checkpoint'), 'wb') as f:
    f.write(_DAMAGED_STATE[state])
  assert cifar10_cli.latest_checkpoint(copy) == os.path.join(copy,
                                                             'model.ckpt-2')


def test_state_file_naming_only_another_directory_is_refused(
    data_dir, checkpoint, tmp_path):
  train_dir = tmp_path / 'train'
  train_dir.mkdir()
  (train_dir / 'checkpoint').write_text(
      'model_checkpoint_path: "%s/model.ckpt-2"\n' % checkpoint)
  before = _snapshot(checkpoint)
  proc = run_script('cifar10_train.py', '--data_dir=%s' % data_dir[0],
                    '--train_dir=%s' % train_dir, '--max_steps=4')
  assert _one_line_error(proc, 'cifar10_train.py', 2) == (
      '%s names checkpoints in %s, none in --train_dir=%s: training would '
      'delete them as it rotated its own; copy them into --train_dir, or '
      'start over with --fresh' % (train_dir / 'checkpoint', checkpoint,
                                   train_dir))
  assert _snapshot(checkpoint) == before


@pytest.mark.parametrize('case', ['directory', 'no parent', 'not a report'])
def test_bad_report_json_fails_before_evaluating(data_dir, checkpoint,
                                                 tmp_path, case):
  target = tmp_path / 'reports'
  if case == 'directory':
    target.mkdir()
    expected = '--report_json=%s is a directory' % target
  elif case == 'not a report':
    # A mistyped path must not replace a checkpoint or a data file.
    target = tmp_path / 'model.ckpt-5.index'
    target.write_bytes(b'\x00\x01{"not": "json"')
    expected = ('--report_json=%s is a file that is not a JSON object: not '
                'replaced' % target)
  else:
    target = target / 'report.json'
    expected = '--report_json=%s has no directory %s' % (target, target.parent)
  proc = run_script('cifar10_eval.py', '--data_dir=%s' % data_dir[0],
                    '--checkpoint_dir=%s' % checkpoint, '--run_once',
                    '--num_examples=100', '--eval_dir=%s' % (tmp_path / 'e'),
                    '--report_json=%s' % target)
  assert _one_line_error(proc, 'cifar10_eval.py', 2) == expected
  assert 'precision @ 1' not in proc.stdout
  assert sorted(os.listdir(str(tmp_path))) == (
      ['reports'] if case == 'directory' else
      ['model.ckpt-5.index'] if case == 'not a report' else [])
  if case == 'not a report':
    assert target.read_bytes() == b'\x00\x01{"not": "json"'


def test_output_files_replace_only_json_objects(tmp_path):
  """A JSON object (a report) or an empty file is replaced; any other file
  is refused, before and at the write."""
  import cifar10_cli  # pylint: disable=g-import-not-at-top
  import cifar10_eval  # pylint: disable=g-import-not-at-top,unused-import
  flags = tf.app.flags.FLAGS
  report = tmp_path / 'report.json'
  # Defined by the import above, after the flags fixture would have saved
  # the values it restores.
  saved, flags.report_json = flags.report_json, str(report)
  try:
    for old in ('{"precision": 0.5}', ''):
      report.write_text(old)
      cifar10_cli.write_json('report_json', {'precision': 0.75})
      assert json.loads(report.read_text()) == {'precision': 0.75}
    for other in ('[1, 2]', 'model_checkpoint_path: "model.ckpt-5"\n'):
      report.write_text(other)
      with pytest.raises(cifar10_cli.UsageError, match='not a JSON object'):
        cifar10_cli.write_json('report_json', {'precision': 0.75})
      assert report.read_text() == other
  finally:
    flags.report_json = saved


@pytest.mark.parametrize('script', ['cifar10_train.py',
                                    'cifar10_multi_gpu_train.py'])
def test_finished_train_dir_needs_no_data(checkpoint, tmp_path, script):
  """Nothing to train: no download (here it would fail), status 0."""
  train_dir = str(tmp_path / 'train')
  _copy_with_relative_state(checkpoint, train_dir)
  data = tmp_path / 'data'
  proc = run_script(script, '--data_dir=%s' % data,
                    '--train_dir=%s' % train_dir, '--max_steps=2',
                    '--data_url=http://127.0.0.1:9/cifar-10-binary.tar.gz',
                    env={'CIFAR10_DOWNLOAD_RETRY_SECONDS': '0.05'}, check=0)
  assert ('already at step 2, --max_steps=2: nothing to do'
          in proc.stdout), proc.stdout
  assert not data.exists()


def test_tensorboard_hint_can_be_pasted():
  import cifar10_cli  # pylint: disable=g-import-not-at-top
  assert cifar10_cli.tensorboard_hint('/tmp/train', '/tmp/eval') == (
      'tensorboard --logdir_spec=train:/tmp/train,eval:/tmp/eval')
  assert cifar10_cli.tensorboard_hint('runs/a b', '/tmp/eval') == (
      "tensorboard '--logdir_spec=train:runs/a b,eval:/tmp/eval'")
  # TensorBoard would split the spec at the comma, losing the training run.
  assert cifar10_cli.tensorboard_hint('runs/lr=0.1,bs=128', '/tmp/eval') == (
      "tensorboard --logdir=runs/lr=0.1,bs=128 and tensorboard "
      "--logdir=/tmp/eval --port=6007 (--logdir_spec cannot hold a path "
      "with a comma)")


def test_atomic_writes_keep_links_and_special_files(tmp_path):
  """--report_json and the like: a link's target gets the text, the link
  stays; a FIFO is written to, not replaced by a file."""
  import cifar10_cli  # pylint: disable=g-import-not-at-top
  target = tmp_path / 'results' / 'run1.json'
  target.parent.mkdir()
  target.write_text('old')
  link = tmp_path / 'latest.json'
  link.symlink_to(target)
  cifar10_cli.write_atomically(str(link), 'new')
  assert link.is_symlink() and target.read_text() == 'new'
  assert sorted(os.listdir(str(tmp_path))) == ['latest.json', 'results']
  assert os.listdir(str(target.parent)) == ['run1.json']

  fifo = tmp_path / 'pipe'
  os.mkfifo(str(fifo))
  reader = subprocess.Popen(['cat', str(fifo)], stdout=subprocess.PIPE,
                            text=True)
  try:
    cifar10_cli.write_atomically(str(fifo), 'through the pipe')
    assert reader.communicate(timeout=30)[0] == 'through the pipe'
  finally:
    if reader.poll() is None:
      reader.kill()
      reader.wait()
  assert stat.S_ISFIFO(os.stat(str(fifo)).st_mode)


def test_readers_use_a_copied_directorys_own_checkpoints(checkpoint,
                                                       tmp_path):
  """Eval, predict and export look checkpoints up by name in
  --checkpoint_dir: a copy's state file names the original's, by absolute
  paths, which may have changed since."""
  import cifar10_cli  # pylint: disable=g-import-not-at-top
  copy = str(tmp_path / 'copy')
  shutil.copytree(checkpoint, copy)
  own = [os.path.join(copy, 'model.ckpt-%d' % step) for step in (0, 2)]
  assert cifar10_cli.listed_checkpoints(copy) == own
  assert cifar10_cli.latest_checkpoint(copy) == own[-1]
  os.remove(os.path.join(copy, 'checkpoint'))
  assert cifar10_cli.listed_checkpoints(copy) == own
  # A state file that names one checkpoint twice (by its absolute and its
  # relative path) lists it once.
  tf.train.update_checkpoint_state(copy, 'model.ckpt-2',
                                   [own[0], 'model.ckpt-0', own[1]])
  assert cifar10_cli.listed_checkpoints(copy) == own


def test_eval_finds_checkpoints_without_the_state_file(data_dir, checkpoint,
                                                      tmp_path):
  copy = str(tmp_path / 'copy')
  shutil.copytree(checkpoint, copy)
  os.remove(os.path.join(copy, 'checkpoint'))
  proc = run_script('cifar10_eval.py', '--data_dir=%s' % data_dir[0],
                    '--checkpoint_dir=%s' % copy, '--run_once',
                    '--num_examples=100', '--eval_dir=%s' % (tmp_path / 'e'),
                    check=0)
  assert 'correct, checkpoint at step 2)' in proc.stdout


def test_unwritable_train_dir(data_dir, tmp_path):
  blocker = tmp_path / 'file'
  blocker.write_text('not a directory')
  proc = run_script('cifar10_train.py', '--data_dir=%s' % data_dir[0],
                    '--train_dir=%s' % (blocker / 'train'), '--max_steps=1')
  message = _one_line_error(proc, 'cifar10_train.py', 2)
  assert message.startswith('--train_dir=%s is not writable' %
                            (blocker / 'train'))
  assert blocker.read_text() == 'not a directory'


@pytest.mark.parametrize('case', ['a file', 'under a file', 'no files'])
def test_unwritable_eval_dir_fails_before_evaluating(data_dir, checkpoint,
                                                     tmp_path, case):
  blocker = tmp_path / 'file'
  blocker.write_text('not a directory')
  # /proc is a directory where no file can be created, even by root (the
  # tests may run as root, for whom permissions block nothing).
  eval_dir = {'a file': blocker, 'under a file': blocker / 'eval',
              'no files': '/proc'}[case]
  proc = run_script('cifar10_eval.py', '--data_dir=%s' % data_dir[0],
                    '--checkpoint_dir=%s' % checkpoint, '--run_once',
                    '--num_examples=100', '--eval_dir=%s' % eval_dir)
  message = _one_line_error(proc, 'cifar10_eval.py', 2)
  assert message.startswith('--eval_dir=%s is not writable: ' % eval_dir)
  assert 'precision @ 1' not in proc.stdout
  assert blocker.read_text() == 'not a directory'


def test_ctrl_c_outside_the_scripts_own_handlers_is_one_line(tmp_path):
  """Where no handler of the scripts' is installed (graph building, the
  predict script), Ctrl-C raises KeyboardInterrupt in main."""
  script = tmp_path / 'cifar10_interrupted.py'
  script.write_text('import cifar10_cli\n\n\ndef main(argv):\n'
                    '  raise KeyboardInterrupt\n\n\ncifar10_cli.run(main)\n')
  proc = subprocess.run(
      [sys.executable, str(script)], cwd=cifar_testdata.REPO,
      env=cifar_testdata.script_env(PYTHONPATH=cifar_testdata.REPO),
      capture_output=True, text=True, timeout=120)
  assert _one_line_error(proc, 'cifar10_interrupted.py',
                         128 + signal.SIGINT) == 'interrupted (Ctrl-C)'


def test_verbose_shows_the_traceback(tmp_path):
  proc = run_script('cifar10_eval.py', '--data_dir=%s' % tmp_path,
                    '--run_once', '--verbose')
  assert proc.returncode == 1
  assert 'Traceback' in proc.stderr and 'no CIFAR-10 data' in proc.stderr


def _steps(train_dir):
  state = tf.train.get_checkpoint_state(train_dir)
  return [int(tf.train.load_variable(p, 'global_step'))
          for p in state.all_model_checkpoint_paths] if state else []


def test_sigkill_at_several_points_loses_nothing(data_dir, tmp_path):
  """Killed at different moments (checkpoints every step, so some kills land
  mid-save), training restarts from the last complete checkpoint: the step
  never goes back and evaluation restores every time."""
  root = data_dir[0]
  train_dir = str(tmp_path / 'train')
  last = 0
  for delay in (0.3, 1.1, 2.3):
    proc = start_script('cifar10_train.py', '--data_dir=%s' % root,
                        '--train_dir=%s' % train_dir, '--batch_size=32',
                        '--max_steps=100000', '--save_checkpoint_steps=1',
                        stdout=-1, stderr=-1)
    # Wait until it trains (the first line of steps), then a little more.
    for line in proc.stdout:
      if ': step ' in line:
        break
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    steps = _steps(train_dir)
    assert steps and steps == sorted(steps)
    assert steps[-1] >= last
    last = steps[-1]
    proc = run_script('cifar10_eval.py', '--data_dir=%s' % root,
                      '--checkpoint_dir=%s' % train_dir, '--run_once',
                      '--num_examples=50',
                      '--eval_dir=%s' % (tmp_path / 'eval'), check=0)
    assert 'checkpoint at step %d)' % last in proc.stdout
  proc = run_script('cifar10_train.py', '--data_dir=%s' % root,
                    '--train_dir=%s' % train_dir, '--batch_size=32',
                    '--max_steps=%d' % (last + 2))
  assert 'resuming from' in proc.stdout and '(step %d)' % last in proc.stdout
  if proc.returncode == 0:
    assert _steps(train_dir)[-1] == last + 2
  else:
    # Some 100 steps at the tutorial's learning rate on this tiny data set
    # can diverge (once in CI, at step 75); the NaN check must then stop
    # training without saving.
    assert re.match(r'loss or gradients not finite at step (%d|%d) ' % (
        last + 1, last + 2), _one_line_error(proc, 'cifar10_train.py', 1))
    assert _steps(train_dir)[-1] == last


def test_eval_skips_a_checkpoint_deleted_before_its_restore(
    data_dir, checkpoint, tmp_path, flags, monkeypatch, graph):
  """The trainer may rotate a checkpoint away between the evaluator's check
  and its restore: NotFoundError, which the watch loop skips, not the
  Saver's ValueError, which ended the evaluator."""
  import cifar10_cli  # pylint: disable=g-import-not-at-top
  import cifar10_eval  # pylint: disable=g-import-not-at-top
  flags.data_dir = data_dir[0]
  flags.eval_dir = str(tmp_path / 'eval')
  copy = str(tmp_path / 'train')
  shutil.copytree(checkpoint, copy)
  read_step = cifar10_cli.checkpoint_step

  def read_step_then_rotate_away(path):
    step = read_step(path)
    for name in os.listdir(copy):
      if name.startswith('model.ckpt-2.'):
        os.remove(os.path.join(copy, name))
    return step
  monkeypatch.setattr(cifar10_cli, 'checkpoint_step',
                      read_step_then_rotate_away)
  evaluator = cifar10_eval._Evaluator(True, 100, cifar_testdata.CLASS_NAMES)
  with pytest.raises(tf.errors.NotFoundError):
    evaluator.evaluate(os.path.join(copy, 'model.ckpt-2'))


@pytest.mark.parametrize('index_gone', [True, False])
def test_a_read_error_is_a_deleted_checkpoint_only_when_its_index_is_gone(
    checkpoint, tmp_path, monkeypatch, index_gone):
  """The trainer's rotation can remove a checkpoint's index between
  TensorFlow finding it and opening it, and TensorFlow then reports it as
  some OpError, not NotFoundError (seen in a run of the suite: the
  evaluator exited with
  "cannot read checkpoint ... .index; No such file or directory"). With the
  index gone that is a deleted checkpoint, which the watch skips; with it
  there, a damaged one, named."""
  import cifar10_cli  # pylint: disable=g-import-not-at-top
  copy = str(tmp_path / 'train')
  shutil.copytree(checkpoint, copy)
  prefix = os.path.join(copy, 'model.ckpt-2')

  def index_lost_while_opening(path):
    if index_gone and os.path.exists(path + '.index'):
      os.remove(path + '.index')
    raise tf.errors.UnknownError(
        None, None, '%s.index; No such file or directory' % path)
  monkeypatch.setattr(tf.train, 'load_checkpoint', index_lost_while_opening)
  for read in (cifar10_cli.checkpoint_step,
               lambda path: cifar10_cli.check_checkpoint(path, {})):
    if index_gone:
      with pytest.raises(tf.errors.NotFoundError, match='was deleted'):
        read(prefix)
    else:
      with pytest.raises(ValueError, match=r'cannot read checkpoint %s \(' %
                         re.escape(prefix)):
        read(prefix)


def test_eval_data_gone_mid_read_is_an_error_and_the_next_evaluation_works(
    data_dir, checkpoint, tmp_path, flags, graph):  # pylint: disable=unused-argument
  """The evaluator keeps its session between checkpoints; a data file
  missing while it reads must neither pass for a deleted checkpoint nor
  leave the input broken for the next evaluation."""
  import cifar10_eval  # pylint: disable=g-import-not-at-top
  root = tmp_path / 'data'
  shutil.copytree(data_dir[0], str(root))
  flags.data_dir = str(root)
  flags.eval_dir = str(tmp_path / 'eval')
  flags.batch_size = 64
  test_file = root / cifar_testdata.BATCHES_DIR / 'test_batch.bin'
  checkpoint_path = os.path.join(checkpoint, 'model.ckpt-2')
  evaluator = cifar10_eval._Evaluator(True, 100, cifar_testdata.CLASS_NAMES)
  test_file.rename(str(test_file) + '.away')
  with pytest.raises(OSError, match='^reading the evaluation images: .*'
                     'test_batch.bin'):
    evaluator.evaluate(checkpoint_path)
  os.rename(str(test_file) + '.away', str(test_file))
  _, confusion, _ = evaluator.evaluate(checkpoint_path)
  evaluator.close()
  fresh = cifar10_eval._Evaluator(True, 100, cifar_testdata.CLASS_NAMES)
  _, expected, _ = fresh.evaluate(checkpoint_path)
  fresh.close()
  assert confusion.sum() == 100
  np.testing.assert_array_equal(confusion, expected)


def _wait_for_count(log_path, text, count, process, seconds=90):
  """Waits until `text` is in the log `count` times; returns the log."""
  deadline = time.time() + seconds
  while True:
    with open(log_path) as f:
      output = f.read()
    if output.count(text) >= count or process.poll() is not None:
      return output
    assert time.time() < deadline, output
    time.sleep(0.2)


def test_eval_evaluates_a_checkpoint_written_again(data_dir, tmp_path):
  """Training started over with --fresh writes model.ckpt-2 again, under
  the same name: a watching evaluation evaluates it again."""
  train = ['--data_dir=%s' % data_dir[0], '--batch_size=16', '--max_steps=2',
           '--train_dir=%s' % (tmp_path / 'train')]
  run_script('cifar10_train.py', *train, check=0)
  log_path = str(tmp_path / 'eval.log')
  evaluated = 'checkpoint at step 2)'
  with open(log_path, 'w') as log:
    evaluator = start_script('cifar10_eval.py', '--data_dir=%s' % data_dir[0],
                             '--checkpoint_dir=%s' % (tmp_path / 'train'),
                             '--eval_interval_secs=1', '--num_examples=100',
                             '--eval_dir=%s' % (tmp_path / 'eval'),
                             stdout=log, stderr=log)
  try:
    _wait_for_count(log_path, evaluated, 1, evaluator)
    run_script('cifar10_train.py', *train, '--fresh', check=0)
    output = _wait_for_count(log_path, evaluated, 2, evaluator)
  finally:
    evaluator.send_signal(signal.SIGTERM)
    evaluator.wait(timeout=60)
  assert output.count(evaluated) == 2, output


def test_eval_survives_checkpoint_rotation(data_dir, tmp_path):
  """Training that saves every step and keeps 5 checkpoints deletes them
  under a watching evaluation, which never crashes."""
  root = data_dir[0]
  train_dir = str(tmp_path / 'train')
  run_script('cifar10_train.py', '--data_dir=%s' % root,
             '--train_dir=%s' % train_dir, '--batch_size=32', '--max_steps=1',
             check=0)
  log_path = str(tmp_path / 'eval.log')
  with open(log_path, 'w') as log:
    evaluator = start_script('cifar10_eval.py', '--data_dir=%s' % root,
                             '--checkpoint_dir=%s' % train_dir,
                             '--eval_interval_secs=1', '--num_examples=300',
                             '--batch_size=4',
                             '--eval_dir=%s' % (tmp_path / 'eval'),
                             stdout=log, stderr=log)
  try:
    run_script('cifar10_train.py', '--data_dir=%s' % root,
               '--train_dir=%s' % train_dir, '--batch_size=32',
               # Not many more: at about 75 steps of batch 32, training on
               # this tiny data set has once diverged (see the SIGKILL test).
               '--max_steps=40', '--save_checkpoint_steps=1', check=0)
    output = _wait_for_count(log_path, 'checkpoint at step 40)', 1,
                             evaluator)
    assert evaluator.poll() is None, output
  finally:
    evaluator.send_signal(signal.SIGTERM)
    evaluator.wait(timeout=60)
  assert evaluator.returncode == 0, output
  assert output.count('precision @ 1 = ') >= 2
  assert 'checkpoint at step 40)' in output


def test_checkpoints_found_by_their_files_in_step_order(tmp_path):
  """Without a state file, the checkpoints are those with an index file,
  ordered by step as a number (9 before 10), and the files of a save
  that was interrupted do not count."""
  import cifar10_cli  # pylint: disable=g-import-not-at-top
  names = ['model.ckpt-9.index', 'model.ckpt-9.data-00000-of-00001',
           'model.ckpt-10.index', 'model.ckpt-10.meta',
           'model.ckpt-100.meta',  # no index: not a checkpoint
           'model.ckpt-11.index.tempstate123',
           'model.ckpt-12.index.tmp' + '0' * 32, 'checkpoint.txt']
  for name in names:
    (tmp_path / name).write_bytes(b'')
  expected = [str(tmp_path / 'model.ckpt-9'), str(tmp_path / 'model.ckpt-10')]
  assert cifar10_cli.checkpoint_files(str(tmp_path)) == expected
  assert cifar10_cli.latest_checkpoint(str(tmp_path)) == expected[-1]
