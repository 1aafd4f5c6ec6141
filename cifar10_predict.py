"""Classifies image files with a trained CIFAR-10 model.

  python cifar10_predict.py [--checkpoint_dir=/tmp/cifar10_train] [--top_k=3]
      IMAGE [IMAGE ...]

Each IMAGE is a PNG or JPEG file (GIF, WebP and BMP work too, but not an
animated WebP, nor a WebP before TensorFlow 2.20, nor a BMP with a colour
palette, compressed, with its channels in another order than blue, green,
red, or of other than 8, 24 or 32 bits a pixel) of up to about 179
megapixels (as many as TensorFlow decodes from a JPEG), colour or grayscale.
It is decoded by TensorFlow (as stored: EXIF orientation is not applied),
resized to 32x32 when it is not already (the aspect ratio is not kept), and
classified by `cifar10.predict` with the moving averages of the weights
from the newest checkpoint in --checkpoint_dir, as cifar10_eval.py evaluates
them. After one log line naming the checkpoint, it prints one line per file,
in the order given, with the --top_k most probable classes:

  cat.png: cat 0.812, dog 0.102, deer 0.031

Every path is checked before the model is loaded, so a typo fails at once
with a line naming the file, and every file is classified before the first
line is printed, so one that is not an image fails the run with a line
naming it, not after part of the output. Each file is read once, so a pipe
works too (/dev/stdin, or bash's <(command)). Class names come from
batches.meta.txt in --data_dir's cifar-10-batches-bin/, or are the official
ones when the data is not there.
"""

from __future__ import absolute_import
from __future__ import division
from __future__ import print_function

import os
import struct

import numpy as np
import tensorflow.compat.v1 as tf

import cifar10
import cifar10_cli
import cifar10_input

FLAGS = tf.app.flags.FLAGS

cifar10_cli.define_checkpoint_dir()
tf.app.flags.DEFINE_integer('top_k', 3,
                            """Number of most probable classes to print for """
                            """each image (1-10).""")

tf.app.flags.register_validator(
    'top_k', lambda value: 1 <= value <= cifar10.NUM_CLASSES,
    message='--top_k must be between 1 and %d' % cifar10.NUM_CLASSES)


def check_path(path):
  """Raises ValueError naming `path` if it is missing or a directory."""
  # Python's own functions for local paths, which take any bytes the file
  # system does; TensorFlow's take UTF-8 only.
  exists, isdir = ((tf.io.gfile.exists, tf.io.gfile.isdir)
                   if cifar10_cli.is_remote(path)
                   else (os.path.exists, os.path.isdir))
  if not exists(path):
    raise ValueError('no such file: %s' % path)
  if isdir(path):
    raise ValueError('%s is a directory, not an image file' % path)


def read_file(path):
  """The bytes of `path`.

  Raises:
    ValueError: naming `path` if it cannot be read (it went missing since
      `check_path`, say).
  """
  try:
    if cifar10_cli.is_remote(path):
      with tf.io.gfile.GFile(path, 'rb') as f:
        return f.read()
    # GFile reads nothing from a pipe: /dev/stdin, or bash's <(command).
    with open(path, 'rb') as f:
      return f.read()
  except (OSError, tf.errors.OpError) as e:
    raise ValueError('cannot read %s: %s' % (path, cifar10_cli.one_line(e)))


# TensorFlow decodes JPEGs of up to 2**29 bytes of RGB pixels; other formats
# are held to the same from their headers, before any decoding (a PNG of a
# few hundred KB can declare 20000x20000 pixels: 6.8 GB to classify).
MAX_PIXELS = 2 ** 29 // 3


def _is_webp(contents):
  return contents[:4] == b'RIFF' and contents[8:12] == b'WEBP'


def _webp_size(contents):
  """(width, height) from a WebP's first chunk: the frame header of a lossy
  (VP8) or lossless (VP8L) image, or an extended one's (VP8X) canvas."""
  chunk = contents[12:16]
  if chunk == b'VP8 ':
    # 14 bits each, after the frame tag and start code; the top 2: scaling.
    width, height = struct.unpack_from('<HH', contents, 26)
    return width & 0x3fff, height & 0x3fff
  if chunk == b'VP8L':
    # After the signature byte: 14 bits each of width - 1 and height - 1.
    bits, = struct.unpack_from('<I', contents, 21)
    return (bits & 0x3fff) + 1, ((bits >> 14) & 0x3fff) + 1
  if chunk == b'VP8X':
    # After the flags: 24 bits each of width - 1 and height - 1.
    return (int.from_bytes(contents[24:27], 'little') + 1,
            int.from_bytes(contents[27:30], 'little') + 1)
  return None


def declared_size(contents):
  """[height, width] that the header of a PNG, GIF, BMP or WebP declares;
  None for other files (TensorFlow's JPEG decoder checks its own)."""
  if _is_webp(contents) and len(contents) >= 30:
    size = _webp_size(contents)
    if size is None:
      return None
    width, height = size
  elif contents[:8] == b'\x89PNG\r\n\x1a\n' and len(contents) >= 24:
    width, height = struct.unpack_from('>II', contents, 16)
  elif contents[:6] in (b'GIF87a', b'GIF89a') and len(contents) >= 10:
    width, height = struct.unpack_from('<HH', contents, 6)
  elif contents[:2] == b'BM' and len(contents) >= 26:
    header_size, = struct.unpack_from('<I', contents, 14)
    # The OS/2 header has 16-bit sizes; later ones signed 32-bit (a
    # negative height: rows stored top down).
    width, height = struct.unpack_from('<HH' if header_size == 12 else '<ii',
                                       contents, 18)
  else:
    return None
  return [abs(height), abs(width)]


def bmp_problem(contents):
  """Why TensorFlow's BMP decoder would not read `contents` right; None if
  it would, or if `contents` is not a BMP.

  The decoder reads 24 and 32 bits a pixel, and 8, whose values it takes
  as gray levels, ignoring the palette: right for a grayscale BMP, whose
  palette maps each value to that gray, silently wrong for any other.
  Other depths it refuses with a message about channels. It reads
  uncompressed pixels, blue, green, red (and alpha), whatever the header
  says of compression or of where each channel's bits are.
  """
  if contents[:2] != b'BM' or len(contents) < 34:
    return None
  header_size, = struct.unpack_from('<I', contents, 14)
  bits, = struct.unpack_from('<H', contents, 28)
  if header_size < 40:
    return None
  if bits not in (8, 24, 32):
    return 'a %d-bit BMP, which TensorFlow does not decode' % bits
  compression, = struct.unpack_from('<I', contents, 30)
  if compression in (3, 6):
    # BI_BITFIELDS, BI_ALPHABITFIELDS: the red, green and blue masks follow
    # the 40 bytes of the oldest such header, inside the later ones.
    if len(contents) < 66:
      return None  # Cut short: TensorFlow's decoder reports it.
    if struct.unpack_from('<3I', contents, 54) != (0xff0000, 0xff00, 0xff):
      return ('a BMP whose channels are not stored blue, green, red, as '
              'TensorFlow reads them')
  elif compression != 0:
    return 'a compressed BMP, which TensorFlow does not decode'
  if bits != 8 or len(contents) < 54:
    return None
  colours, = struct.unpack_from('<I', contents, 46)
  colours = colours or 256
  # Entries of blue, green, red and a reserved byte, after the header.
  table = np.frombuffer(contents[14 + header_size:], np.uint8)
  if len(table) < 4 * colours:
    return None  # Cut short: TensorFlow's decoder reports it.
  table = table[:4 * colours].reshape(-1, 4)[:, :3]
  if (table == np.arange(colours)[:, None]).all():
    return None
  return 'a BMP with a colour palette, which TensorFlow decodes as gray levels'


# WebP came to decode_image with TensorFlow 2.20, as did decode_webp.
_DECODES_WEBP = hasattr(tf.io, 'decode_webp')


def webp_problem(contents):
  """Why TensorFlow would not decode the WebP `contents` right; None if it
  would, or if `contents` is not a WebP.

  Before 2.20 TensorFlow decodes no WebP. Of an animated WebP, its decoder
  gives another image than the first frame (or, asked for every frame,
  corrupts its memory).
  """
  if not _is_webp(contents):
    return None
  if not _DECODES_WEBP:
    return ('a WebP, which TensorFlow %s does not decode (2.20 and later do)'
            % tf.__version__)
  # The extended header's flags: bit 1, animation.
  if (contents[12:16] == b'VP8X' and len(contents) > 20 and
      contents[20] & 0x02):
    return 'an animated WebP, which TensorFlow does not decode right'
  return None


class Classifier(object):
  """Decodes and classifies one encoded image per run.

  Images of different sizes cannot share a batch until they are resized,
  and resizing belongs to `cifar10.predict`, so each file is one run with a
  batch of 1, whatever --batch_size says.
  """

  def __init__(self):
    self.graph = tf.Graph()
    with self.graph.as_default():
      # The file's bytes are fed from Python, so that reading errors name
      # the file instead of surfacing from inside the graph.
      self.contents = tf.placeholder(tf.string, [], name='contents')
      self.webp = tf.placeholder_with_default(False, [], name='webp')
      # channels=3: grayscale is replicated and alpha dropped, since the
      # model wants RGB. expand_animations=False: a GIF gives its first
      # frame, so every format decodes to [height, width, 3]. But WebP's
      # decoder refuses channels=3 for a file with alpha: it gets the
      # file's channels (RGB or RGBA), and alpha is dropped here.
      image = tf.cond(
          self.webp,
          lambda: tf.io.decode_image(self.contents, channels=0,
                                     dtype=tf.uint8,
                                     expand_animations=False)[:, :, :3],
          lambda: tf.io.decode_image(self.contents, channels=3,
                                     dtype=tf.uint8, expand_animations=False))
      self.probabilities = cifar10.predict(image[None])[0]   # [NUM_CLASSES]
      self.var_map = cifar10.variables_to_restore()
      self.saver = tf.train.Saver(self.var_map)
    self.sess = tf.Session(graph=self.graph,
                           config=cifar10_cli.session_config())

  def restore(self, checkpoint):
    """Loads the moving averages of the weights saved in `checkpoint`.

    Raises:
      ValueError: if the checkpoint is of another model.
    """
    cifar10_cli.check_checkpoint(checkpoint, self.var_map)
    self.saver.restore(self.sess, checkpoint)

  def classify(self, path, contents):
    """Class probabilities of the encoded image `contents`, read from `path`.

    Returns:
      float32 [NUM_CLASSES].

    Raises:
      ValueError: naming `path`, if it is not an image that TensorFlow
        decodes right.
    """
    size = declared_size(contents)
    if size and size[0] * size[1] > MAX_PIXELS:
      raise ValueError(
          '%s is %dx%d pixels, more than the %d million this classifies '
          '(as many as TensorFlow decodes from a JPEG): shrink it first'
          % (path, size[1], size[0], round(MAX_PIXELS / 1e6)))
    problem = bmp_problem(contents) or webp_problem(contents)
    if problem:
      raise ValueError('%s is %s: convert it to PNG' % (path, problem))
    try:
      return self.sess.run(self.probabilities,
                           {self.contents: contents,
                            self.webp: _is_webp(contents)})
    except tf.errors.OpError as e:
      raise ValueError('%s cannot be read as an image (PNG, JPEG, GIF, '
                       'WebP or BMP): %s' % (path, cifar10_cli.one_line(e)))

  def close(self):
    self.sess.close()


def format_prediction(path, probabilities, class_names, top_k):
  """'<path>: <class> <p>, ...' for the `top_k` most probable classes."""
  # Stable sort, so equal probabilities keep the label order.
  order = np.argsort(-probabilities, kind='stable')[:top_k]
  return '%s: %s' % (path, ', '.join(
      '%s %.3f' % (class_names[i], probabilities[i]) for i in order))


def main(argv):
  paths = argv[1:]
  if not paths:
    raise cifar10_cli.UsageError(
        'no image files given: cifar10_predict.py --checkpoint_dir=DIR '
        'IMAGE [IMAGE ...]')
  class_names = cifar10_input.class_names(cifar10.batches_dir())
  checkpoint = cifar10_cli.latest_checkpoint(FLAGS.checkpoint_dir)
  for path in paths:
    check_path(path)
  classifier = Classifier()
  try:
    classifier.restore(checkpoint)
    # Each file is read once (a pipe can be read only once, so a path
    # given twice is not read again) and kept as its probabilities only,
    # however large and many the files.
    probabilities = {}
    for path in paths:
      if path not in probabilities:
        probabilities[path] = classifier.classify(path, read_file(path))
  finally:
    classifier.close()
  cifar10_cli.log('classified %d image(s) with %s (step %d)'
                  % (len(paths), checkpoint,
                     cifar10_cli.checkpoint_step(checkpoint)))
  for path in paths:
    print(format_prediction(path, probabilities[path], class_names,
                            FLAGS.top_k))
  return 0


if __name__ == '__main__':
  cifar10_cli.run(main, takes_arguments=True)
