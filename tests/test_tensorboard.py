"""What training and evaluation write, as a real TensorBoard serves it.

Trains a few steps and evaluates once, then starts TensorBoard with the
command the scripts print and reads every dashboard's data through its HTTP
API, the way the browser does.
"""

import io
import json
import os
import re
import shlex
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import numpy as np
from PIL import Image
import pytest

import cifar_testdata

MAX_STEPS = 6
SUMMARY_STEPS = 2
EVAL_EXAMPLES = 40
LOAD_TIMEOUT = 90  # Seconds for TensorBoard to start and load the logs.

LAYERS = ['conv1', 'conv2', 'local3', 'local4', 'softmax_linear']
TRAIN_SCALARS = (
    ['learning_rate', 'global_step/sec'] +
    ['%s%s' % (loss, suffix) for loss in ('cross_entropy', 'total_loss',
                                          'local3/weight_loss',
                                          'local4/weight_loss')
     for suffix in ('', '_raw')] +
    ['%s/sparsity' % layer for layer in LAYERS])
TRAIN_HISTOGRAMS = ['%s/%s' % (layer, name) for layer in LAYERS
                    for name in ('activations', 'weights', 'biases',
                                 'weights/gradients', 'biases/gradients')]


def _tensorboard_command(stdout):
  """The `tensorboard --logdir...` command a script printed, split."""
  match = re.search(r'(tensorboard --logdir\S*)', stdout)
  assert match, 'no tensorboard command in:\n' + stdout
  return shlex.split(match.group(1))


@pytest.fixture(scope='module')
def logs(tmp_path_factory):
  """Trains MAX_STEPS steps and evaluates the last checkpoint once."""
  root = tmp_path_factory.mktemp('tensorboard')
  data_dir = str(root / 'data')
  cifar_testdata.write_dataset(
      os.path.join(data_dir, cifar_testdata.BATCHES_DIR), train_per_file=16,
      test_records=EVAL_EXAMPLES, seed=5)
  train_dir, eval_dir = str(root / 'train'), str(root / 'eval')
  report = str(root / 'report.json')
  train = cifar_testdata.run_script(
      'cifar10_train.py', '--data_dir=' + data_dir, '--train_dir=' + train_dir,
      '--max_steps=%d' % MAX_STEPS, '--batch_size=16',
      '--save_summaries_steps=%d' % SUMMARY_STEPS, check=0)
  evaluation = cifar_testdata.run_script(
      'cifar10_eval.py', '--data_dir=' + data_dir,
      '--checkpoint_dir=' + train_dir, '--eval_dir=' + eval_dir, '--run_once',
      '--num_examples=%d' % EVAL_EXAMPLES, '--batch_size=16',
      '--report_json=' + report, check=0)
  with open(report) as f:
    figures = json.load(f)
  return {'train_dir': train_dir, 'eval_dir': eval_dir,
          'train_stdout': train.stdout, 'eval_stdout': evaluation.stdout,
          'report': figures, 'root': root}


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


class _Server(object):
  """A TensorBoard subprocess and GETs on its HTTP API."""

  def __init__(self, proc, port, log_path):
    self.proc = proc
    self.base = 'http://127.0.0.1:%d' % port
    self.log_path = log_path

  def log(self):
    with open(self.log_path) as f:
      return f.read()[-3000:]

  def get(self, path, **params):
    """The body of GET `path`?`params`, or None while not served yet."""
    url = self.base + path
    if params:
      url += '?' + urllib.parse.urlencode(params)
    try:
      with urllib.request.urlopen(url, timeout=10) as response:
        return response.read()
    except (urllib.error.URLError, ConnectionError, socket.timeout):
      return None

  def get_json(self, path, **params):
    body = self.get(path, **params)
    return None if body is None else json.loads(body)

  def wait_for(self, description, fetch, check):
    """Polls `fetch()` until `check(value)` holds; TensorBoard loads the
    logs in the background, run by run, tag by tag.

    Returns:
      The value that passed.
    """
    deadline = time.time() + LOAD_TIMEOUT
    value = None
    while time.time() < deadline:
      assert self.proc.poll() is None, (
          'TensorBoard exited %s:\n%s' % (self.proc.returncode, self.log()))
      value = fetch()
      if value is not None and check(value):
        return value
      time.sleep(0.5)
    raise AssertionError('TensorBoard never served %s; last answer: %.2000s'
                         '\nits log:\n%s' % (description, value, self.log()))


@pytest.fixture(scope='module')
def tensorboard(logs):
  """TensorBoard started with the command cifar10_eval.py printed."""
  command = _tensorboard_command(logs['eval_stdout'])
  port = _free_port()
  log_path = str(logs['root'] / 'tensorboard.log')
  with open(log_path, 'w') as log:
    proc = subprocess.Popen(
        [sys.executable, '-m', 'tensorboard.main'] + command[1:] +
        ['--host=127.0.0.1', '--port=%d' % port, '--reload_interval=1',
         # The Python loader: no dependence on the data-server binary.
         '--load_fast=false'],
        stdout=log, stderr=subprocess.STDOUT,
        env=cifar_testdata.script_env())
  server = _Server(proc, port, log_path)
  try:
    # Loaded once the last thing each script wrote is there.
    server.wait_for(
        'both runs', lambda: server.get_json('/data/plugin/scalars/tags'),
        lambda tags: any('Precision @ 1' in t for t in tags.values()) and
        any('total_loss' in t for t in tags.values()))
    yield server
  finally:
    proc.terminate()
    try:
      proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
      proc.kill()
      proc.wait()


def _run(server, name):
  """TensorBoard's name of the --logdir_spec run `name` ('train/.' today)."""
  runs = server.get_json('/data/runs')
  matches = [r for r in runs if r == name or r.startswith(name + '/')]
  assert len(matches) == 1, runs
  return matches[0]


def test_scripts_print_tensorboard_command(logs):
  train = _tensorboard_command(logs['train_stdout'])
  evaluation = _tensorboard_command(logs['eval_stdout'])
  assert train[0] == evaluation[0] == 'tensorboard'
  assert logs['train_dir'] in ' '.join(train)
  assert logs['train_dir'] in ' '.join(evaluation)
  assert logs['eval_dir'] in ' '.join(evaluation)


def test_runs(tensorboard):
  runs = tensorboard.get_json('/data/runs')
  assert len(runs) == 2, runs
  _run(tensorboard, 'train')
  _run(tensorboard, 'eval')


def test_train_scalars(tensorboard):
  run = _run(tensorboard, 'train')
  tags = tensorboard.wait_for(
      'the training scalars',
      lambda: tensorboard.get_json('/data/plugin/scalars/tags'),
      lambda tags: set(TRAIN_SCALARS) <= set(tags.get(run, ())))
  assert set(TRAIN_SCALARS) <= set(tags[run]), sorted(tags[run])
  for tag in TRAIN_SCALARS:
    points = tensorboard.get_json('/data/plugin/scalars/scalars', run=run,
                                  tag=tag)
    steps = [step for _, step, _ in points]
    # One point every SUMMARY_STEPS steps, within the training.
    assert len(steps) >= MAX_STEPS // SUMMARY_STEPS - 1, (tag, points)
    assert steps == sorted(set(steps)), (tag, points)
    assert 0 <= steps[0] and steps[-1] <= MAX_STEPS, (tag, points)
    assert all(np.isfinite(v) for _, _, v in points), (tag, points)
  rate = tensorboard.get_json('/data/plugin/scalars/scalars', run=run,
                              tag='learning_rate')
  assert [v for _, _, v in rate] == pytest.approx([0.1] * len(rate))


def test_eval_precision(tensorboard, logs):
  run = _run(tensorboard, 'eval')
  points = tensorboard.get_json('/data/plugin/scalars/scalars', run=run,
                                tag='Precision @ 1')
  report = logs['report']
  assert [(step, value) for _, step, value in points] == [
      (MAX_STEPS, pytest.approx(report['precision_at_1']))]


def _image_entries(server, run, tag):
  return server.wait_for(
      'images %s of %s' % (tag, run),
      lambda: server.get_json('/data/plugin/images/images', run=run, tag=tag,
                              sample=0),
      lambda entries: len(entries) > 0)


def _png(server, entry):
  """The decoded image of one entry of /data/plugin/images/images."""
  body = server.get('/data/plugin/images/individualImage?' + entry['query'])
  assert body is not None and body.startswith(b'\x89PNG'), body[:20]
  return np.array(Image.open(io.BytesIO(body)))


def test_images(tensorboard, logs):
  train, evaluation = _run(tensorboard, 'train'), _run(tensorboard, 'eval')
  tags = tensorboard.get_json('/data/plugin/images/tags')
  # tf.summary.image names its images '<name>/image/<i>'.
  assert any(t.startswith('images/image') for t in tags[train]), tags
  assert any(t.startswith('images/image') for t in tags[evaluation]), tags
  assert 'confusion_matrix' in tags[evaluation], tags

  inputs = _image_entries(tensorboard, train, 'images/image/0')
  image = _png(tensorboard, inputs[0])
  assert image.shape == (24, 24, 3)  # The distorted crops the model sees.

  entries = _image_entries(tensorboard, evaluation, 'confusion_matrix')
  assert [e['step'] for e in entries] == [MAX_STEPS]
  pixels = _png(tensorboard, entries[0])
  # 10x10 cells, each as bright as the share of its row's images.
  confusion = np.array(logs['report']['confusion_matrix'])
  cell = pixels.shape[0] // 10
  assert pixels.shape == (cell * 10, cell * 10) and cell > 0
  totals = np.maximum(confusion.sum(axis=1, keepdims=True), 1)
  np.testing.assert_array_equal(
      pixels[cell // 2::cell, cell // 2::cell],
      (255 * confusion / totals).astype(np.uint8))


def test_histograms_and_distributions(tensorboard):
  run = _run(tensorboard, 'train')
  for plugin in ('histograms', 'distributions'):
    tags = tensorboard.wait_for(
        plugin, lambda: tensorboard.get_json('/data/plugin/%s/tags' % plugin),
        lambda tags: set(TRAIN_HISTOGRAMS) <= set(tags.get(run, ())))
    assert set(TRAIN_HISTOGRAMS) <= set(tags[run])
  histogram = tensorboard.get_json('/data/plugin/histograms/histograms',
                                   run=run, tag='conv1/weights')
  assert len(histogram) >= MAX_STEPS // SUMMARY_STEPS - 1
  _, step, buckets = histogram[-1]
  assert 0 < step <= MAX_STEPS
  # Every weight of the 5x5x3x64 kernel is counted once.
  assert sum(count for _, _, count in buckets) == pytest.approx(5 * 5 * 3 * 64)
  distribution = tensorboard.get_json(
      '/data/plugin/distributions/distributions', run=run,
      tag='local3/activations')
  _, _, percentiles = distribution[-1]
  # Basis points 0 (min) to 10000 (max) of ReLU outputs.
  assert percentiles[0][0] == 0 and percentiles[-1][0] == 10000
  values = [v for _, v in percentiles]
  assert values == sorted(values) and values[0] >= 0


def test_graphs(tensorboard):
  info = tensorboard.get_json('/data/plugin/graphs/info')
  for name in ('train', 'eval'):
    run = _run(tensorboard, name)
    assert info[run]['run_graph'], info
    graph = tensorboard.get('/data/plugin/graphs/graph', run=run)
    assert graph is not None
    text = graph.decode('utf-8')
    for node in ('conv1/weights', 'local3/weights', 'softmax_linear/biases'):
      assert 'name: "%s"' % node in text, (name, node)
  train_graph = tensorboard.get('/data/plugin/graphs/graph',
                                run=_run(tensorboard, 'train'))
  # Training graph: the optimizer step is there too.
  assert b'GradientDescent' in train_graph
