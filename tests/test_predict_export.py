"""Evaluation report, cifar10_predict.py and cifar10_export.py end to end.

One model is trained briefly per module. Its predictions are checked against
a reference built here from the evaluation pieces (preprocess_for_eval,
inference, moving averages), independently of `cifar10.predict`.
"""

import concurrent.futures
import functools
import io
import json
import os
import re
import shutil
import signal
import stat
import struct
import subprocess
import sys
import time

import numpy as np
from PIL import Image
import pytest
import tensorflow.compat.v1 as tf
from tensorflow.core.protobuf import saved_model_pb2

import cifar10
import cifar10_input
import cifar_testdata

TRAIN_STEPS = 30
BATCH_SIZE = 32
EVAL_EXAMPLES = 40  # Not a multiple of the batch size: a partial last batch.
# Names written to batches.meta.txt, so the output shows they are read.
META_NAMES = [n.upper() for n in cifar_testdata.CLASS_NAMES]


def _python_output(code, *args):
  """The last line that Python code `code` prints, run with `args` in a
  process of its own from the repository; it must succeed."""
  proc = subprocess.run([sys.executable, '-c', code] + list(args),
                        env=cifar_testdata.script_env(),
                        cwd=cifar_testdata.REPO, capture_output=True,
                        text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr
  return proc.stdout.strip().splitlines()[-1]


def _error_line(proc, script):
  """The one `<script>: error: ...` line of a failed run (TensorFlow's own
  start-up logging may precede it on stderr)."""
  assert proc.returncode != 0, proc.stdout + proc.stderr
  assert 'Traceback' not in proc.stderr, proc.stderr
  ours = [line for line in proc.stderr.splitlines()
          if line.startswith(script)]
  assert len(ours) == 1, proc.stderr
  assert ours[0] == proc.stderr.rstrip('\n').splitlines()[-1], proc.stderr
  assert ours[0].startswith(script + ': error: '), proc.stderr
  return ours[0]


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  """A data dir and a train dir with a checkpoint at TRAIN_STEPS."""
  root = tmp_path_factory.mktemp('predict')
  data_dir = str(root / 'data')
  batches = os.path.join(data_dir, cifar_testdata.BATCHES_DIR)
  written = cifar_testdata.write_dataset(batches, train_per_file=32,
                                         test_records=64, seed=3)
  with open(os.path.join(batches, 'batches.meta.txt'), 'w') as f:
    f.write('\n'.join(META_NAMES) + '\n')
  train_dir = str(root / 'train')
  cifar_testdata.run_script(
      'cifar10_train.py', '--data_dir=' + data_dir, '--train_dir=' + train_dir,
      '--max_steps=%d' % TRAIN_STEPS, '--batch_size=%d' % BATCH_SIZE,
      check=0)
  checkpoint = tf.train.latest_checkpoint(train_dir)
  assert checkpoint.endswith('model.ckpt-%d' % TRAIN_STEPS)
  test_labels, test_images = written['test_batch.bin']
  return {'root': root, 'data_dir': data_dir, 'train_dir': train_dir,
          'checkpoint': checkpoint, 'test_labels': test_labels,
          'test_images': test_images}


def reference_probabilities(checkpoint, images, averaged=True):
  """Softmax of the evaluation graph on uint8 [N, 32, 32, 3] `images`.

  Built from the evaluation pieces, not from `cifar10.predict`.

  Args:
    averaged: restore the moving averages (as evaluation does); False for
      the raw trained weights.
  """
  with tf.Graph().as_default():
    pixels = tf.placeholder(tf.uint8, [None, 32, 32, 3])
    logits = cifar10.inference(cifar10_input.preprocess_for_eval(pixels),
                               dtype=tf.float32)
    probabilities = tf.nn.softmax(logits)
    saver = tf.train.Saver(cifar10.variables_to_restore() if averaged
                           else None)
    with tf.Session() as sess:
      saver.restore(sess, checkpoint)
      return sess.run(probabilities, {pixels: np.asarray(images, np.uint8)})


def _decode_jpeg(path):
  with tf.Graph().as_default(), tf.Session() as sess:
    return sess.run(tf.io.decode_jpeg(tf.io.read_file(path), channels=3))


@functools.lru_cache(maxsize=None)
def _decodes_webp():
  """Whether this TensorFlow decodes WebP images (2.20 and later do, 2.16 to
  2.19 do not), by one of a single frame: of an animated WebP, its decoder
  corrupts the heap."""
  contents = io.BytesIO()
  Image.new('RGB', (3, 2), 'red').save(contents, 'WEBP', lossless=True)
  with tf.Graph().as_default(), tf.Session() as sess:
    try:
      sess.run(tf.io.decode_image(contents.getvalue(),
                                  expand_animations=False))
      return True
    except tf.errors.InvalidArgumentError:
      return False


@pytest.fixture(scope='module')
def image_files(trained):
  """Image files of several formats and sizes.

  Returns:
    list of (path, uint8 [32, 32, 3] pixels the model must see for it).
  """
  directory = trained['root'] / 'images'
  directory.mkdir()
  originals = trained['test_images'][:6]
  files = []

  def add(name, array, reference, **save_args):
    path = str(directory / name)
    Image.fromarray(array).save(path, **save_args)
    files.append((path, reference))

  add('plain.png', originals[0], originals[0])
  # Whole-number upscales, which area resizing turns back into the
  # original pixels exactly; one of them not square.
  add('big.png', originals[1].repeat(2, axis=0).repeat(2, axis=1),
      originals[1])
  add('wide.png', originals[2].repeat(4, axis=1), originals[2])
  # A threefold upscale whose block centres stand out, each by its own
  # amount (a constant offset standardization would take away): area
  # resizing gives each block's mean, bilinear resizing its centre.
  base = originals[0] // 2
  step = originals[1] % 8
  blocks = base.repeat(3, axis=0).repeat(3, axis=1)
  blocks[1::3, 1::3] += 9 * step
  add('three.png', blocks, base + step)
  add('gray.png', originals[3][:, :, 1], originals[3][:, :, 1:2].repeat(3, 2))
  # 8 bits a pixel, with a palette of grays: what TensorFlow's decoder reads.
  add('gray.bmp', originals[3][:, :, 2], originals[3][:, :, 2:].repeat(3, 2))
  rgba = np.concatenate([originals[4], np.full((32, 32, 1), 77, np.uint8)],
                        axis=2)
  add('alpha.png', rgba, originals[4])
  # Lossless, so the reference is exact. TensorFlow's WebP decoder refused
  # channels=3 for one with alpha. Before 2.20 it decodes no WebP, and
  # cifar10_predict.py refuses them (test_webp_problems_are_...).
  add('plain.webp', originals[2], originals[2], lossless=True)
  add('alpha.webp', rgba, originals[4], lossless=True)
  if not _decodes_webp():
    del files[-2:]
  jpeg = str(directory / 'photo.jpg')
  Image.fromarray(originals[5]).save(jpeg, quality=90)
  # JPEG is lossy: the reference is the decoded pixels.
  files.append((jpeg, _decode_jpeg(jpeg)))
  return files


def _parse_predictions(stdout, paths):
  """{path: [(class name, probability), ...]} from the output lines."""
  parsed = {}
  for line in stdout.splitlines():
    for path in paths:
      if line.startswith(path + ': '):
        assert path not in parsed, stdout
        parsed[path] = [
            (item.split(' ')[0], float(item.split(' ')[1]))
            for item in line[len(path) + 2:].split(', ')]
  assert sorted(parsed) == sorted(paths), stdout
  return parsed


def test_eval_report_adds_up(trained, tmp_path):
  report_path = str(tmp_path / 'report.json')
  proc = cifar_testdata.run_script(
      'cifar10_eval.py', '--data_dir=' + trained['data_dir'],
      '--checkpoint_dir=' + trained['train_dir'],
      '--eval_dir=' + str(tmp_path / 'eval'), '--run_once',
      '--num_examples=%d' % EVAL_EXAMPLES, '--batch_size=16',
      '--report_json=' + report_path, check=0)
  with open(report_path) as f:
    figures = json.load(f)
  lines = proc.stdout.splitlines()

  # The precision line.
  match = re.search(r'precision @ 1 = ([0-9.]+) \(top-1 accuracy: (\d+) / '
                    r'(\d+) correct, checkpoint at step (\d+)\)', proc.stdout)
  assert match, proc.stdout
  assert int(match.group(3)) == EVAL_EXAMPLES
  assert int(match.group(4)) == TRAIN_STEPS
  assert int(match.group(2)) == figures['correct']
  assert float(match.group(1)) == pytest.approx(figures['precision_at_1'],
                                                abs=5e-4)

  # The per-class table.
  start = next(i for i, line in enumerate(lines)
               if line.startswith('class '))
  end = next(i for i, line in enumerate(lines)
             if line.startswith('confusion '))
  rows = [re.match(r'^(\S+)\s+(\d+) / (\d+)\s+(\S+)$', line)
          for line in lines[start + 1:end]]
  assert all(rows) and len(rows) == 10, proc.stdout
  table = [(m.group(1), int(m.group(2)), int(m.group(3)), m.group(4))
           for m in rows]
  assert [r[0] for r in table] == META_NAMES
  expected_totals = np.bincount(trained['test_labels'][:EVAL_EXAMPLES],
                                minlength=10)
  assert [r[2] for r in table] == expected_totals.tolist()
  assert sum(r[2] for r in table) == EVAL_EXAMPLES

  # The confusion matrix, after its column-header line.
  matrix_lines = [line.split() for line in lines[end + 2:end + 12]]
  assert [line[0] for line in matrix_lines] == META_NAMES
  matrix = np.array([[int(v) for v in line[1:]] for line in matrix_lines])
  assert matrix.shape == (10, 10)
  assert matrix.sum(axis=1).tolist() == expected_totals.tolist()
  assert np.diag(matrix).tolist() == [r[1] for r in table]
  assert np.trace(matrix) == int(match.group(2))

  # The JSON says the same as the printed table.
  assert figures['num_examples'] == EVAL_EXAMPLES
  assert figures['global_step'] == TRAIN_STEPS
  assert figures['checkpoint'] == trained['checkpoint']
  assert figures['confusion_matrix'] == matrix.tolist()
  for row, entry in zip(table, figures['per_class']):
    assert (entry['class'], entry['correct'], entry['total']) == row[:3]
    if entry['total']:
      assert row[3] == '%.3f' % entry['accuracy']
    else:
      assert row[3] == '-' and entry['accuracy'] is None

  # And it is the evaluation graph's verdict on those images.
  classes = reference_probabilities(
      trained['checkpoint'],
      trained['test_images'][:EVAL_EXAMPLES]).argmax(axis=1)
  reference = np.zeros((10, 10), np.int64)
  np.add.at(reference, (trained['test_labels'][:EVAL_EXAMPLES], classes), 1)
  assert matrix.tolist() == reference.tolist()


@pytest.fixture(scope='module')
def predicted(trained, image_files):
  """cifar10_predict.py on all the files, every class printed.

  Returns:
    {path: [(class name, probability), ...]}, most probable first.
  """
  paths = [p for p, _ in image_files]
  # --batch_size must not matter (the files are not a multiple of it).
  proc = cifar_testdata.run_script(
      'cifar10_predict.py', '--checkpoint_dir=' + trained['train_dir'],
      '--data_dir=' + trained['data_dir'], '--top_k=10', '--batch_size=4',
      *paths, check=0)
  assert 'model.ckpt-%d' % TRAIN_STEPS in proc.stdout
  return _parse_predictions(proc.stdout, paths)


def _printed_probabilities(predictions):
  """[NUM_CLASSES] probabilities in label order from one parsed line."""
  names = [n for n, _ in predictions]
  assert sorted(names) == sorted(META_NAMES), predictions
  return np.array([dict(predictions)[n] for n in META_NAMES])


def test_predict_matches_evaluation_graph(trained, image_files, predicted):
  parsed = predicted
  reference = reference_probabilities(trained['checkpoint'],
                                      np.stack([r for _, r in image_files]))
  raw = reference_probabilities(trained['checkpoint'],
                                np.stack([r for _, r in image_files]),
                                averaged=False)
  # The averaged and raw weights disagree enough to tell which were used.
  assert np.abs(reference - raw).max() > 0.01
  for (path, _), expected in zip(image_files, reference):
    names = [n for n, _ in parsed[path]]
    printed = np.array([p for _, p in parsed[path]])
    np.testing.assert_allclose(_printed_probabilities(parsed[path]),
                               expected, atol=6e-4, err_msg=path)
    assert np.all(np.diff(printed) <= 0), path  # Most probable first.
    second, first = np.sort(expected)[-2:]
    if first - second > 1e-3:  # No near-tie the rounding could flip.
      assert names[0] == META_NAMES[expected.argmax()], path


def test_predict_one_image_default_top_k(trained, image_files):
  path = image_files[1][0]  # 64x64: resized.
  # No data dir: the official class names.
  proc = cifar_testdata.run_script(
      'cifar10_predict.py', '--checkpoint_dir=' + trained['train_dir'],
      '--data_dir=' + str(trained['root'] / 'missing'), path, check=0)
  top = _parse_predictions(proc.stdout, [path])[path]
  assert len(top) == 3
  expected = reference_probabilities(trained['checkpoint'],
                                     image_files[1][1][None])[0]
  for name, probability in top:
    index = cifar_testdata.CLASS_NAMES.index(name)
    assert probability == pytest.approx(expected[index], abs=6e-4)
  assert [p for _, p in top] == pytest.approx(
      np.sort(expected)[::-1][:3].tolist(), abs=6e-4)


def test_predict_reads_a_pipe(trained, image_files, tmp_path):
  """A named pipe, which can be read only once (and which TensorFlow's
  file reader reads as empty), classified like the file it streams."""
  path = image_files[0][0]
  pipe = str(tmp_path / 'stream.png')
  os.mkfifo(pipe)
  # Blocks until the script opens the pipe; killed if it never does.
  writer = subprocess.Popen(['sh', '-c', 'cat "$1" > "$2"', 'sh', path,
                             pipe])
  try:
    # Given twice, the pipe is still read once.
    proc = cifar_testdata.run_script(
        'cifar10_predict.py', '--checkpoint_dir=' + trained['train_dir'],
        '--data_dir=' + trained['data_dir'], '--top_k=10', pipe, path, pipe,
        check=0)
  finally:
    writer.kill()
    writer.wait()
  lines = [line for line in proc.stdout.splitlines()
           if line.startswith((pipe + ': ', path + ': '))]
  assert [line.split(': ', 1)[0] for line in lines] == [pipe, path, pipe]
  assert len({line.split(': ', 1)[1] for line in lines}) == 1, lines


_LOAD_SAVED_MODEL = r'''
import json, sys
import numpy as np
import tensorflow as tf
model = tf.saved_model.load(sys.argv[1])
serve = model.signatures['serving_default']
images = np.load(sys.argv[2])
out = serve(images=tf.constant(images))
spec = serve.structured_input_signature[1]['images']
print(json.dumps({
    'input': [spec.dtype.name, spec.shape.as_list()],
    'outputs': {k: [v.dtype.name, v.shape.as_list()] for k, v in out.items()},
    'probabilities': out['probabilities'].numpy().tolist(),
    'classes': out['classes'].numpy().tolist(),
    'empty': serve(images=tf.zeros([0, 32, 32, 3], tf.uint8))[
        'probabilities'].shape.as_list()}))
'''


def test_export_loads_and_agrees(trained, image_files, predicted,
                                tmp_path):
  export_dir = str(tmp_path / 'models' / '1')
  proc = cifar_testdata.run_script(
      'cifar10_export.py', '--checkpoint_dir=' + trained['train_dir'],
      '--export_dir=' + export_dir, check=0)
  assert export_dir in proc.stdout
  # Nothing names the temporary directory it was written to.
  assert '.export-' not in proc.stdout + proc.stderr
  # Only the model: no temporary directory left next to it.
  assert os.listdir(str(tmp_path / 'models')) == ['1']
  assert {'saved_model.pb', 'variables'} <= set(os.listdir(export_dir))
  # As mkdir would make it, not private like the temporary directory it was:
  # a server running as another user reads it.
  umask = os.umask(0)
  os.umask(umask)
  assert stat.S_IMODE(os.stat(export_dir).st_mode) == 0o777 & ~umask

  # What TensorFlow Serving reads: tag, signature name, method, tensors.
  saved = saved_model_pb2.SavedModel()
  with open(os.path.join(export_dir, 'saved_model.pb'), 'rb') as f:
    saved.ParseFromString(f.read())
  assert len(saved.meta_graphs) == 1
  meta = saved.meta_graphs[0]
  assert list(meta.meta_info_def.tags) == ['serve']
  signature = meta.signature_def['serving_default']
  assert signature.method_name == 'tensorflow/serving/predict'
  assert list(signature.inputs) == ['images']
  assert sorted(signature.outputs) == ['classes', 'probabilities']
  # The variables pinned to the CPU for training are free to move.
  assert not [n.name for n in meta.graph_def.node if n.device], 'devices'

  images = np.stack([r for _, r in image_files])
  npy = str(tmp_path / 'images.npy')
  np.save(npy, images)
  result = json.loads(_python_output(_LOAD_SAVED_MODEL, export_dir, npy))
  assert result['input'] == ['uint8', [None, 32, 32, 3]]
  count = len(image_files)
  assert result['outputs'] == {'probabilities': ['float32', [count, 10]],
                               'classes': ['int64', [count]]}
  probabilities = np.array(result['probabilities'])
  expected = reference_probabilities(trained['checkpoint'], images)
  # The moving averages, as evaluation and prediction use.
  np.testing.assert_allclose(probabilities, expected, atol=1e-5)
  assert result['classes'] == probabilities.argmax(axis=1).tolist()
  assert result['empty'] == [0, 10]

  # And the same as cifar10_predict.py on the files (the resized ones too).
  for i, (path, _) in enumerate(image_files):
    np.testing.assert_allclose(_printed_probabilities(predicted[path]),
                               probabilities[i], atol=6e-4, err_msg=path)
    second, first = np.sort(probabilities[i])[-2:]
    if first - second > 1e-3:  # No near-tie the rounding could flip.
      assert predicted[path][0][0] == META_NAMES[result['classes'][i]], path


@pytest.fixture(scope='module')
def bad_runs(trained, image_files, tmp_path_factory):
  """The scripts on bad inputs, all started at once.

  Each run only starts TensorFlow and fails, so running them side by side
  (three at a time) saves most of their time.

  Returns:
    {case: (subprocess.CompletedProcess, directory of the case's files)}.
  """
  root = tmp_path_factory.mktemp('bad_inputs')
  checkpoints = '--checkpoint_dir=' + trained['train_dir']
  cases = {}
  for case in ('non_image', 'missing_file', 'predict_no_checkpoint',
               'export_no_checkpoint', 'export_not_empty',
               'export_unwritable', 'export_damaged_checkpoint',
               'export_leftover',
               'palette_bmp', 'huge_png', 'export_fp16', 'animated_webp'):
    (root / case).mkdir()
  animated = root / 'animated_webp' / 'moving.webp'
  frames = [Image.new('RGB', (32, 32), colour) for colour in ('red', 'blue')]
  frames[0].save(str(animated), save_all=True, append_images=frames[1:])
  cases['animated_webp'] = ('cifar10_predict.py', checkpoints, str(animated))
  # A header declaring 20000x20000 pixels is all it takes.
  huge = root / 'huge_png' / 'huge.png'
  huge.write_bytes(_png_header(20000, 20000) + b'\0' * 1000)
  cases['huge_png'] = ('cifar10_predict.py', checkpoints, str(huge))
  bogus = root / 'non_image' / 'notes.png'
  bogus.write_text('not an image at all\n')
  cases['non_image'] = ('cifar10_predict.py', checkpoints, image_files[0][0],
                        str(bogus))
  palette = root / 'palette_bmp' / 'red.bmp'
  Image.new('RGB', (32, 32), (255, 0, 0)).convert(
      'P', palette=Image.ADAPTIVE).save(str(palette))
  cases['palette_bmp'] = ('cifar10_predict.py', checkpoints, str(palette))
  cases['missing_file'] = ('cifar10_predict.py', checkpoints,
                           str(root / 'missing_file' / 'nowhere.jpg'))
  empty = root / 'predict_no_checkpoint' / 'no_checkpoints'
  empty.mkdir()
  cases['predict_no_checkpoint'] = ('cifar10_predict.py',
                                    '--checkpoint_dir=' + str(empty),
                                    image_files[0][0])
  empty = root / 'export_no_checkpoint' / 'no_checkpoints'
  empty.mkdir()
  cases['export_no_checkpoint'] = (
      'cifar10_export.py', '--checkpoint_dir=' + str(empty),
      '--export_dir=' + str(root / 'export_no_checkpoint' / 'out'))
  mine = root / 'export_not_empty' / 'mine'
  mine.mkdir()
  (mine / 'notes.txt').write_text('keep me')
  (mine / 'variables').mkdir()
  cases['export_not_empty'] = ('cifar10_export.py', checkpoints,
                               '--export_dir=' + str(mine))
  # What an export killed while writing into an empty directory leaves.
  leftover = root / 'export_leftover' / '1'
  (leftover / '.export-k1ll3d').mkdir(parents=True)
  cases['export_leftover'] = ('cifar10_export.py', checkpoints,
                              '--export_dir=' + str(leftover))
  # Root ignores permissions: a path below a regular file is unwritable for
  # anyone.
  blocker = root / 'export_unwritable' / 'a_file'
  blocker.write_text('x')
  cases['export_unwritable'] = ('cifar10_export.py', checkpoints,
                                '--export_dir=' + str(blocker / 'model' / '1'))

  cases['export_fp16'] = ('cifar10_export.py', checkpoints, '--use_fp16',
                          '--export_dir=' + str(root / 'export_fp16' / '1'))

  # Found only once the checkpoint is read, after the export's parent
  # directories are made.
  damaged = root / 'export_damaged_checkpoint' / 'train'
  shutil.copytree(trained['train_dir'], str(damaged))
  for data in damaged.glob('*.data-*'):
    data.write_bytes(data.read_bytes()[:1000])
  cases['export_damaged_checkpoint'] = (
      'cifar10_export.py', '--checkpoint_dir=' + str(damaged),
      '--export_dir=' + str(damaged.parent / 'new' / 'models' / '1'))

  def finish(args):
    proc = cifar_testdata.start_script(*args, stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE)
    try:
      stdout, stderr = proc.communicate(timeout=240)
    finally:
      if proc.poll() is None:
        proc.kill()
        proc.wait()
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout,
                                       stderr)

  # Three at a time: all at once, their start-ups took both cores for tens
  # of seconds, and the tests that time processes on the other test worker
  # with them.
  with concurrent.futures.ThreadPoolExecutor(max_workers=3) as pool:
    futures = {case: pool.submit(finish, args)
               for case, args in cases.items()}
    return {case: (future.result(), root / case)
            for case, future in futures.items()}


def test_predict_rejects_non_image(bad_runs, image_files):
  proc, directory = bad_runs['non_image']
  line = _error_line(proc, 'cifar10_predict.py')
  assert str(directory / 'notes.png') in line
  # TensorFlow's reason, from the decoder inside a tf.cond branch, whose
  # error has no "Node:" line.
  assert re.search(r'cannot be read as an image \(PNG, JPEG, GIF, WebP or '
                   r'BMP\): Unknown image file format\. One of JPEG, .*'
                   r'required\.$', line), line
  # Nothing is printed before every file is classified: no partial output.
  assert not proc.stdout


@pytest.mark.parametrize('case,name,problem', [
    # TensorFlow would read its palette indices as gray levels.
    ('palette_bmp', 'red.bmp', 'a BMP with a colour palette, which '
     'TensorFlow decodes as gray levels'),
    # TensorFlow decodes another image than its first frame.
    ('animated_webp', 'moving.webp', 'an animated WebP, which TensorFlow '
     'does not decode right')])
def test_predict_rejects_what_tensorflow_decodes_wrong(bad_runs, case, name,
                                                       problem):
  proc, directory = bad_runs[case]
  if name.endswith('.webp') and not _decodes_webp():
    problem = _OLD_WEBP % tf.__version__
  assert _error_line(proc, 'cifar10_predict.py') == (
      'cifar10_predict.py: error: %s is %s: convert it to PNG'
      % (directory / name, problem))
  assert not proc.stdout


def test_predict_rejects_images_too_large_to_decode(bad_runs):
  """Refused from the header, before TensorFlow decodes gigabytes."""
  proc, directory = bad_runs['huge_png']
  assert _error_line(proc, 'cifar10_predict.py') == (
      'cifar10_predict.py: error: %s is 20000x20000 pixels, more than the '
      '179 million this classifies (as many as TensorFlow decodes from a '
      'JPEG): shrink it first' % (directory / 'huge.png'))
  assert not proc.stdout


def _png_header(width, height):
  """A PNG's signature and IHDR chunk (8-bit RGB; the CRC is not checked
  by the header's reader)."""
  return (b'\x89PNG\r\n\x1a\n' + b'\0\0\0\rIHDR' +
          width.to_bytes(4, 'big') + height.to_bytes(4, 'big') +
          b'\x08\x02\0\0\0' + b'\0' * 4)


def test_prediction_line_ranks_ties_in_label_order():
  """--top_k classes, the most probable first; equal probabilities keep
  the classes' order."""
  code = ('import numpy, cifar10_predict; '
          'print(cifar10_predict.format_prediction("x.png", numpy.array('
          '[0.25, 0.25, 0.5] + [0.0] * 7, numpy.float32), %r, 3))'
          % cifar_testdata.CLASS_NAMES)
  assert _python_output(code) == (
      'x.png: bird 0.500, airplane 0.250, automobile 0.250')


_DECLARED_SIZES = r'''
import json, sys
import cifar10_predict
print(json.dumps([cifar10_predict.declared_size(open(path, 'rb').read())
                  for path in sys.argv[1:]]))
'''


def test_declared_sizes_of_each_format(tmp_path):
  """Width 7, height 5 from the headers of real files; JPEG is left to
  TensorFlow's decoder."""
  paths = []
  for ext, fmt in (('png', 'PNG'), ('gif', 'GIF'), ('bmp', 'BMP'),
                   ('jpg', 'JPEG')):
    path = str(tmp_path / ('small.' + ext))
    Image.new('RGB', (7, 5), (10, 20, 30)).save(path, fmt)
    paths.append(path)
  # WebP: lossy (VP8), lossless (VP8L), and extended (VP8X) for alpha.
  alpha = np.random.RandomState(0).randint(0, 256, (5, 7, 4), np.uint8)
  for chunk, image, lossless in ((b'VP8 ', Image.new('RGB', (7, 5)), False),
                                 (b'VP8L', Image.new('RGB', (7, 5)), True),
                                 (b'VP8X', Image.fromarray(alpha), False)):
    path = tmp_path / ('%s.webp' % chunk.decode().strip())
    image.save(str(path), 'WEBP', lossless=lossless)
    assert path.read_bytes()[12:16] == chunk
    paths.append(str(path))
  big = tmp_path / 'big.png'
  big.write_bytes(_png_header(20000, 10000))
  paths.append(str(big))
  # Lossless WebP: 14 bits each of width - 1 and height - 1.
  big = tmp_path / 'big.webp'
  big.write_bytes(b'RIFF\0\0\0\0WEBPVP8L\0\0\0\0\x2f' +
                  (15999 | 11999 << 14).to_bytes(4, 'little') + b'\0' * 8)
  paths.append(str(big))
  sizes = json.loads(_python_output(_DECLARED_SIZES, *paths))
  assert sizes == [[5, 7], [5, 7], [5, 7], None, [5, 7], [5, 7], [5, 7],
                   [10000, 20000], [12000, 16000]]


_BMP_PROBLEMS = r'''
import json, os, sys
import numpy as np
import tensorflow as tf
from PIL import Image
import cifar10_predict
out = {}
for path in sys.argv[1:]:
  with open(path, 'rb') as f:
    contents = f.read()
  try:
    decoded = tf.io.decode_image(contents, channels=3,
                                 expand_animations=False).numpy()
    right = bool((decoded == np.asarray(Image.open(path).convert('RGB'))).all())
  except tf.errors.OpError:
    right = False
  out[os.path.basename(path)] = [cifar10_predict.bmp_problem(contents), right]
print(json.dumps(out))
'''


def _bitfields_bmp(pixels, masks):
  """A 32-bit BMP (BITMAPV4HEADER) of RGBA `pixels` [height, width, 4],
  each channel stored where the masks (red, green, blue, alpha) say: PIL
  writes no such files, but reads them."""
  height, width = pixels.shape[:2]
  shifts = [(mask & -mask).bit_length() - 1 for mask in masks]
  values = sum(pixels[..., i].astype(np.uint32) << shifts[i]
               for i in range(4))
  rows = values[::-1].astype('<u4').tobytes()  # Bottom row first.
  # Size, width, height, planes, bits, BI_BITFIELDS, image size,
  # resolution, colours; the masks; colour space fields left zero.
  header = (struct.pack('<IiiHHIIiiII', 108, width, height, 1, 32, 3,
                        len(rows), 2835, 2835, 0, 0) +
            struct.pack('<4I', *masks) + bytes(108 - 56))
  offset = 14 + len(header)
  return (b'BM' + struct.pack('<IHHI', offset + len(rows), 0, 0, offset) +
          header + rows)


def _rle8_bmp(gray):
  """An 8-bit BMP of the uint8 gray levels `gray` [height, width], with a
  palette of grays and its rows run-length encoded (BI_RLE8)."""
  height, width = gray.shape
  runs = b''.join(b''.join(bytes([1, value]) for value in row) + b'\0\0'
                  for row in gray[::-1]) + b'\0\1'
  palette = np.arange(256, dtype=np.uint8).repeat(4).reshape(256, 4)
  palette[:, 3] = 0
  header = struct.pack('<IiiHHIIiiII', 40, width, height, 1, 8, 1,
                       len(runs), 2835, 2835, 256, 0) + palette.tobytes()
  offset = 14 + len(header)
  return (b'BM' + struct.pack('<IHHI', offset + len(runs), 0, 0, offset) +
          header + runs)


def test_bmp_problems_are_what_tensorflow_reads_wrong(tmp_path):
  """A BMP passes exactly when TensorFlow decodes the pixels that PIL
  reads; the others are named for what they are."""
  pixels = np.random.RandomState(3).randint(0, 256, (6, 5, 4), np.uint8)
  images = {'rgb': Image.fromarray(pixels[..., :3]),
            'rgba': Image.fromarray(pixels),
            'gray': Image.fromarray(pixels[..., 0]),
            'palette': Image.fromarray(pixels[..., :3]).convert(
                'P', palette=Image.ADAPTIVE),
            'bits1': Image.fromarray(pixels[..., 0]).convert('1')}
  paths = []
  for name, image in images.items():
    paths.append(str(tmp_path / (name + '.bmp')))
    image.save(paths[-1], 'BMP')
  # Channel masks: TensorFlow reads blue, green, red (and alpha) whatever
  # they say.
  for name, masks in (('bgra_masks', (0xff0000, 0xff00, 0xff, 0xff000000)),
                      ('rgba_masks', (0xff, 0xff00, 0xff0000, 0xff000000))):
    paths.append(str(tmp_path / (name + '.bmp')))
    with open(paths[-1], 'wb') as f:
      f.write(_bitfields_bmp(pixels, masks))
  # Cut short within the masks: TensorFlow's decoder says so.
  paths.append(str(tmp_path / 'cut_masks.bmp'))
  with open(paths[-1], 'wb') as f:
    f.write(_bitfields_bmp(pixels, (0xff0000, 0xff00, 0xff, 0xff000000))[:60])
  paths.append(str(tmp_path / 'rle8.bmp'))
  with open(paths[-1], 'wb') as f:
    f.write(_rle8_bmp(pixels[..., 0]))
  results = json.loads(_python_output(_BMP_PROBLEMS, *paths))
  assert results == {
      'rgb.bmp': [None, True], 'rgba.bmp': [None, True],
      'gray.bmp': [None, True],
      'palette.bmp': ['a BMP with a colour palette, which TensorFlow decodes '
                      'as gray levels', False],
      'bits1.bmp': ['a 1-bit BMP, which TensorFlow does not decode', False],
      'bgra_masks.bmp': [None, True], 'cut_masks.bmp': [None, False],
      'rgba_masks.bmp': ['a BMP whose channels are not stored blue, green, '
                         'red, as TensorFlow reads them', False],
      'rle8.bmp': ['a compressed BMP, which TensorFlow does not decode',
                   False]}


_WEBP_PROBLEMS = r'''
import json, os, sys
import numpy as np
import tensorflow as tf
from PIL import Image
import cifar10_predict
out = {}
for path in sys.argv[1:]:
  with open(path, 'rb') as f:
    contents = f.read()
  right = None  # An animation is not decoded: that corrupts the heap.
  if not Image.open(path).is_animated:
    try:
      decoded = tf.io.decode_image(contents, channels=0,
                                   expand_animations=False).numpy()[:, :, :3]
      right = bool((decoded == np.asarray(Image.open(path).convert('RGB'))
                   ).all())
    except tf.errors.OpError:
      right = False
  out[os.path.basename(path)] = [cifar10_predict.webp_problem(contents), right]
print(json.dumps([tf.__version__, out]))
'''
_OLD_WEBP = 'a WebP, which TensorFlow %s does not decode (2.20 and later do)'


def test_webp_problems_are_what_tensorflow_reads_wrong(tmp_path):
  """A WebP of one frame passes exactly when TensorFlow decodes the pixels
  that PIL reads: on TensorFlow 2.20 and later, with or without alpha;
  before 2.20, none. An animated one never passes (see webp_problem)."""
  pixels = np.random.RandomState(4).randint(0, 256, (6, 5, 4), np.uint8)
  paths = [str(tmp_path / name) for name in ('rgb.webp', 'rgba.webp',
                                             'moving.webp')]
  Image.fromarray(pixels[..., :3]).save(paths[0], 'WEBP', lossless=True)
  Image.fromarray(pixels).save(paths[1], 'WEBP', lossless=True)
  frames = [Image.new('RGB', (5, 6), colour) for colour in ('red', 'blue')]
  frames[0].save(paths[2], 'WEBP', save_all=True, append_images=frames[1:],
                 lossless=True)
  version, results = json.loads(_python_output(_WEBP_PROBLEMS, *paths))
  animated = 'an animated WebP, which TensorFlow does not decode right'
  if results['rgb.webp'][1]:
    assert results == {'rgb.webp': [None, True], 'rgba.webp': [None, True],
                       'moving.webp': [animated, None]}
  else:
    old = _OLD_WEBP % version
    assert results == {'rgb.webp': [old, False], 'rgba.webp': [old, False],
                       'moving.webp': [old, None]}


def test_webp_refusal_before_tensorflow_2_20(tmp_path):
  """What TensorFlow 2.16 to 2.19 give (a compatibility run checks it for
  real), on any TensorFlow: every WebP refused, other formats not."""
  paths = [str(tmp_path / name) for name in ('plain.webp', 'plain.png')]
  for path in paths:
    Image.new('RGB', (5, 6), 'red').save(path, lossless=True)
  code = ('import json, sys, cifar10_predict; '
          'cifar10_predict._DECODES_WEBP = False; '
          'print(json.dumps([cifar10_predict.webp_problem('
          'open(path, "rb").read()) for path in sys.argv[1:]]))')
  assert json.loads(_python_output(code, *paths)) == [
      _OLD_WEBP % tf.__version__, None]


def test_predict_rejects_missing_file(bad_runs):
  proc, directory = bad_runs['missing_file']
  line = _error_line(proc, 'cifar10_predict.py')
  assert str(directory / 'nowhere.jpg') in line and 'no such file' in line


@pytest.mark.parametrize('script', ['cifar10_predict.py', 'cifar10_export.py'])
def test_no_checkpoint(bad_runs, script):
  proc, directory = bad_runs[script[len('cifar10_'):-len('.py')] +
                             '_no_checkpoint']
  line = _error_line(proc, script)
  assert 'no checkpoint' in line
  assert str(directory / 'no_checkpoints') in line
  assert os.listdir(str(directory)) == ['no_checkpoints']  # No export.


@pytest.mark.parametrize('how', ['dot', 'link'])
def test_export_to_an_empty_directory_by_dot_or_link(trained, tmp_path, how):
  """The model goes into the empty directory that the flag leads to: once,
  a rename refused a path ending in '.' and could not put a directory in
  place of a link, where the model was written and then refused."""
  empty = tmp_path / 'models' / '1'
  empty.mkdir(parents=True)
  if how == 'link':
    flag = tmp_path / 'latest'
    flag.symlink_to(empty)
  else:
    flag = '%s/.' % empty
  cifar_testdata.run_script(
      'cifar10_export.py', '--checkpoint_dir=' + trained['train_dir'],
      '--export_dir=%s' % flag, check=0)
  assert {'saved_model.pb', 'variables'} <= set(os.listdir(str(empty)))
  assert os.listdir(str(tmp_path / 'models')) == ['1']
  if how == 'link':
    assert os.readlink(str(flag)) == str(empty)


def test_export_keeps_an_existing_empty_directory(trained, tmp_path):
  """Made beforehand, for a server, with a mode and group of its own: the
  model is written into it, not in its place (which also took a writable
  parent directory)."""
  empty = tmp_path / 'models' / '1'
  empty.mkdir(parents=True)
  os.chmod(str(empty), 0o2750)
  before = os.stat(str(empty))
  cifar_testdata.run_script(
      'cifar10_export.py', '--checkpoint_dir=' + trained['train_dir'],
      '--export_dir=%s' % empty, check=0)
  after = os.stat(str(empty))
  assert (after.st_ino, after.st_mode, after.st_gid) == (
      before.st_ino, before.st_mode, before.st_gid)
  assert sorted(os.listdir(str(empty))) == ['saved_model.pb', 'variables']
  assert os.listdir(str(tmp_path / 'models')) == ['1']


def test_export_refuses_use_fp16(bad_runs):
  """A served model is float32: asked for less, the export says so rather
  than writing float32 anyway."""
  proc, directory = bad_runs['export_fp16']
  line = _error_line(proc, 'cifar10_export.py')
  assert line.startswith('cifar10_export.py: error: --use_fp16: the export is '
                         'always float32')
  assert os.listdir(str(directory)) == []


def test_export_refuses_non_empty_dir(bad_runs):
  proc, directory = bad_runs['export_not_empty']
  mine = directory / 'mine'
  line = _error_line(proc, 'cifar10_export.py')
  assert str(mine) in line and 'not empty (2 entries)' in line
  # Untouched, and no temporary directory left next to it.
  assert sorted(os.listdir(str(mine))) == ['notes.txt', 'variables']
  assert (mine / 'notes.txt').read_text() == 'keep me'
  assert os.listdir(str(mine / 'variables')) == []
  assert os.listdir(str(directory)) == ['mine']


def test_export_names_what_a_killed_export_left(bad_runs):
  """Hidden from ls, it is named, and left for the user to remove."""
  proc, directory = bad_runs['export_leftover']
  assert _error_line(proc, 'cifar10_export.py') == (
      'cifar10_export.py: error: --export_dir=%s holds only .export-k1ll3d, '
      'left by an export that was killed or is still running; remove it if '
      'none is running' % (directory / '1'))
  assert os.listdir(str(directory / '1')) == ['.export-k1ll3d']


def test_failed_export_removes_the_directories_it_made(bad_runs):
  proc, directory = bad_runs['export_damaged_checkpoint']
  assert 'cannot read checkpoint' in _error_line(proc, 'cifar10_export.py')
  assert os.listdir(str(directory)) == ['train']


@pytest.mark.parametrize('existing', [False, True])
def test_stopped_export_leaves_nothing(trained, tmp_path, existing):
  """SIGTERM while the model is written: the temporary directory and the
  parents made for it are removed, an empty --export_dir made beforehand is
  left empty, and the exit says why."""
  export_dir = tmp_path / 'models' / '1'
  if existing:
    export_dir.mkdir(parents=True)
  proc = cifar_testdata.start_script(
      'cifar10_export.py', '--checkpoint_dir=' + trained['train_dir'],
      '--export_dir=' + str(export_dir),
      stdout=subprocess.PIPE, stderr=subprocess.PIPE)

  def started():
    # The temporary directory: beside the new one, inside the existing one.
    return (existing and os.listdir(str(export_dir))) or (
        not existing and (tmp_path / 'models').exists())

  try:
    deadline = time.time() + 120
    while not started() and time.time() < deadline:
      time.sleep(0.01)
    assert started(), 'the export never started'
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
  finally:
    if proc.poll() is None:
      proc.kill()
      proc.wait()
  if proc.returncode == 0:
    # The signal came too late (a busy machine): the export had ended as
    # usual, whole.
    assert os.listdir(str(tmp_path / 'models')) == ['1']
    assert 'saved_model.pb' in os.listdir(str(export_dir))
    return
  assert proc.returncode == 128 + signal.SIGTERM, stderr[-3000:]
  assert _error_line(subprocess.CompletedProcess(
      proc.args, proc.returncode, stdout, stderr), 'cifar10_export.py') == (
          'cifar10_export.py: error: terminated (SIGTERM)')
  if existing:
    assert os.listdir(str(export_dir)) == []
  else:
    assert os.listdir(str(tmp_path)) == []


def test_export_unwritable_dir(bad_runs):
  proc, directory = bad_runs['export_unwritable']
  blocker = directory / 'a_file'
  assert _error_line(proc, 'cifar10_export.py') == (
      'cifar10_export.py: error: --export_dir=%s cannot be created: %s is a '
      'file' % (blocker / 'model' / '1', blocker))
  assert blocker.read_text() == 'x'
  assert os.listdir(str(directory)) == ['a_file']
