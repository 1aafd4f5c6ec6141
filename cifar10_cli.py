"""Command-line plumbing shared by the suite's scripts.

  run(main)           parse flags strictly, run main, turn errors into one line
  log(message)        the one timestamped log-line format
  tensorboard_hint()  the command that shows training and evaluation together

`tf.compat.v1.app.run` ignores flags it does not know, so `--max_step=5`
would train with the default; `run` rejects them instead.
"""

from __future__ import absolute_import
from __future__ import division
from __future__ import print_function

import contextlib
import datetime
import json
import os
import re
import resource
import shlex
import signal
import sys
import tempfile
import time
import traceback

from absl import app
import tensorflow.compat.v1 as tf

import cifar10_input

FLAGS = tf.app.flags.FLAGS

tf.app.flags.DEFINE_boolean(
    'verbose', False,
    """Print the full traceback of an error, not just its one-line message.""")


_IMPORTED_AT = time.time()

# The trainers' checkpoints are '<directory>/model.ckpt-<global step>'.
CHECKPOINT_BASENAME = 'model.ckpt'
# The files of one: '<basename>-<step>.index', '.meta' and '.data-N-of-M',
# with the temporary suffix of a save that was interrupted ('.tempstate<n>'
# from TensorFlow's checkpoint writer, '.tmp<32 hex digits>' from its atomic
# write of the .meta file). Groups: step, kind, temporary suffix.
CHECKPOINT_FILE = re.compile(
    r'^%s-(\d+)\.(index|meta|data-\d+-of-\d+)'
    r'(\.tempstate\d+|\.tmp[0-9a-f]{32})?$' % re.escape(CHECKPOINT_BASENAME))


class UsageError(Exception):
  """A problem the user can fix: printed as one line, exit status 2."""


def _prog():
  return os.path.basename(sys.argv[0])


def fail(message, status=1, at_once=False):
  """Prints `<script>: error: <message>` on stderr and exits.

  With `at_once`, the process ends here, without unwinding or cleanup: for
  cleanup that would never end (see cifar10_cluster.PS_LOST_ERRORS).
  """
  sys.stderr.write('%s: error: %s%s\n' % (_prog(), _log_prefix, message))
  sys.stderr.flush()
  if at_once:
    sys.stdout.flush()
    os._exit(status)  # pylint: disable=protected-access
  sys.exit(status)


def _parse_flags(argv):
  """Parses every flag strictly: unknown or invalid flags are an error."""
  try:
    return FLAGS(argv)
  except tf.app.flags.Error as e:
    fail('%s (see --helpfull)' % one_line(e), status=2)
  except SystemExit as e:
    # absl's --help, --helpshort, --helpfull and --helpxml print the help
    # and exit with status 1 before main; asking for help is no error.
    sys.exit(0 if e.code == 1 else e.code)
  except UnicodeDecodeError as e:
    # absl reads a --flagfile as text, and names no file when it is not.
    fail('--flagfile=%s is not a text file of flags (%s)'
         % (_binary_flagfile(argv) or '?', e), status=2)


def _binary_flagfile(argv, seen=None):
  """The first file that `argv` names with --flagfile (either form, or
  inside a flagfile it names) and that is not UTF-8 text; None if none."""
  seen = set() if seen is None else seen
  for i, arg in enumerate(argv):
    name, _, value = arg.strip().lstrip('-').partition('=')
    if name != 'flagfile' or not arg.strip().startswith('-'):
      continue
    path = value if value or '=' in arg else (
        argv[i + 1] if i + 1 < len(argv) else '')
    if path in seen:
      continue
    seen.add(path)
    try:
      with open(path, encoding='utf-8') as f:
        inner = _binary_flagfile(f.read().splitlines(), seen)
    except UnicodeDecodeError:
      return path
    except OSError:
      continue
    if inner:
      return inner
  return None


# How TensorFlow escapes the strings of a failed tf.Assert's data.
_C_ESCAPES = {b'n': b'\n', b'r': b'\r', b't': b'\t'}


def _c_unescape(text):
  """`text` with C escapes (\\n, \\", \\\\, \\ooo octal bytes) undone."""
  def unescape(match):
    code = match.group(1)
    if len(code) == 3:
      return bytes([int(code, 8)])
    return _C_ESCAPES.get(code, code)
  return re.sub(rb'\\([0-7]{3}|.)', unescape, text.encode('utf-8'),
                flags=re.S).decode('utf-8', 'replace')


def is_remote(path):
  """Whether `path` is on a filesystem such as gs:// rather than local."""
  return re.match('^[a-z][a-z0-9+.-]*://', path) is not None


def one_line(error):
  """The line of an error message that says what went wrong.

  A TensorFlow graph error starts with 'Graph execution error:' and where
  the node was defined; its own message follows the "Node: '...'" line, or,
  for a node inside a function (a branch of tf.cond), the blank line after
  the first. A failed tf.Assert (one in a tf.data function, too) gives its
  data on one line as '[part] [part] ...', strings C-escaped.
  """
  text = str(error).strip() or type(error).__name__
  match = re.search(r'assertion failed: \[(.*)\]$', text, re.M)
  if match:
    # Split where one part ends and the next starts, not at every bracket:
    # a part may hold one (a path such as 'run[1]').
    parts = match.group(1).split('] [')
    return ' '.join(_c_unescape(part) for part in parts)
  match = re.search(r"^Node: '[^']*'\n(.+)$", text, re.M)
  if match:
    return match.group(1)
  lines = [line for line in text.splitlines() if line.strip()]
  if len(lines) > 1 and lines[0] == 'Graph execution error:':
    return lines[1]
  return lines[0]


def run(main, takes_arguments=False):
  """Runs `main(argv)` under strict flag parsing and one-line errors.

  Errors the user can cause (bad data, flags, files, checkpoints) are
  ValueError, OSError, TensorFlow errors or UsageError: they print one line
  naming the problem and exit 1 (2 for usage), with the traceback only
  under --verbose.

  Unless `takes_arguments`, an argument that is not a flag is an error too:
  `max_steps=5` without its dashes would otherwise be ignored as silently
  as an unknown flag.
  """

  def guarded(argv):
    try:
      return errors_reported(argv)
    except BaseException:
      if _terminated:
        # exit_on_sigterm's exit, raised wherever the main thread was, can
        # come out of library code as another error.
        fail('terminated (SIGTERM)', 128 + _terminated[0])
      raise

  def errors_reported(argv):
    # The scripts are TensorFlow 1.x programs: graphs and sessions.
    tf.disable_eager_execution()
    try:
      if len(argv) > 1 and not takes_arguments:
        raise UsageError('unexpected argument %r: flags are written '
                         '--name=value (see --helpfull)' % argv[1])
      return main(argv)
    except UsageError as e:
      _report(e, 2)
    except (ValueError, OSError, tf.errors.OpError) as e:
      _report(e, 1)
    except KeyboardInterrupt:
      # Ctrl-C where no handler of ours is installed (building the graph,
      # classifying images): one line, and the shell's status for SIGINT.
      _report(RuntimeError('interrupted (Ctrl-C)'), 128 + signal.SIGINT)

  # TensorFlow's logger has its own handler; absl's root handler would print
  # every line a second time.
  tf.get_logger().propagate = False
  app.run(guarded, flags_parser=_parse_flags)


_terminated = []  # The SIGTERM that exit_on_sigterm turned into an exit.


def exit_on_sigterm():
  """Makes SIGTERM exit through Python (status 143, with a one-line
  message under `run`), so that `finally` blocks remove what they must:
  its default action ends the process at once. Call it from the main
  thread."""
  def handler(signum, unused_frame):
    _terminated.append(signum)
    sys.exit(128 + signum)
  signal.signal(signal.SIGTERM, handler)


def _report(error, status):
  if FLAGS.verbose:
    traceback.print_exc()
  fail(cifar10_input.locate_bad_label(one_line(error)), status)


def session_config(**options):
  """The scripts' session options: ops without a GPU kernel run on the CPU,
  and GPU memory is taken as needed, not nearly all of it at the start, so
  that a trainer, an evaluator and the tools fit on one GPU together (with
  the original tutorial the evaluator ran out of memory next to the
  trainer).

  Args:
    **options: more tf.ConfigProto fields.
  """
  config = tf.ConfigProto(allow_soft_placement=True, **options)
  config.gpu_options.allow_growth = True
  return config


def seconds_since_start():
  """Seconds since this process started (since this module was imported
  where /proc is not available)."""
  try:
    with open('/proc/self/stat') as f:
      # Field 22, after the parenthesized command name: start time in clock
      # ticks after boot.
      start_ticks = int(f.read().rsplit(')', 1)[1].split()[19])
    with open('/proc/uptime') as f:
      uptime = float(f.read().split()[0])
    return uptime - start_ticks / os.sysconf('SC_CLK_TCK')
  except (OSError, ValueError, IndexError):
    return time.time() - _IMPORTED_AT


def peak_memory_mb():
  """Peak resident memory of this process so far, in MB (10**6 bytes)."""
  # ru_maxrss is in KiB on Linux.
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6


# Names the speaker in each log and error line, e.g. 'worker 1: ' when
# several tasks of a cluster log side by side; empty on one machine.
_log_prefix = ''


def set_log_prefix(prefix):
  """Starts every later log and error line with `prefix`."""
  global _log_prefix
  _log_prefix = prefix


def log(message):
  """Prints `<timestamp>: <message>`, the tutorial's log-line format."""
  print('%s: %s%s' % (datetime.datetime.now(), _log_prefix, message))
  sys.stdout.flush()


def tensorboard_hint(train_dir, eval_dir):
  """The command that shows training and evaluation side by side, quoted
  for a shell where a path needs it.

  --logdir_spec splits its value at every comma: for a path with one, a
  TensorBoard for each directory.
  """
  if ',' in train_dir + eval_dir:
    return ('tensorboard --logdir=%s and tensorboard --logdir=%s --port=6007 '
            '(--logdir_spec cannot hold a path with a comma)'
            % (shlex.quote(train_dir), shlex.quote(eval_dir)))
  return 'tensorboard %s' % shlex.quote(
      '--logdir_spec=train:%s,eval:%s' % (train_dir, eval_dir))


# The largest value of a count, step or seconds flag. Python takes any
# integer, but TensorFlow and its hooks overflow past int64 with a traceback.
MAX_FLAG_INT = 2**31 - 1


def positive(name):
  """Registers a validator: flag `name` must be 1 to MAX_FLAG_INT."""
  tf.app.flags.register_validator(
      name, lambda value: 0 < value <= MAX_FLAG_INT,
      message='--%s must be a positive integer, at most %d'
      % (name, MAX_FLAG_INT))


def _encodes(text):
  try:
    text.encode('utf-8')
    return True
  except UnicodeEncodeError:
    return False


def path_flag(name):
  """Registers validators: flag `name`, a path, must not be empty, as it is
  when set from an unset shell variable, and must be UTF-8: a byte outside it
  reaches Python as a lone surrogate, which TensorFlow's file functions
  cannot encode as the text paths the scripts give them, and they failed
  without naming the path."""
  tf.app.flags.register_validator(
      name, lambda value: bool(value),
      message='--%s must not be empty' % name)
  tf.app.flags.register_validator(
      name, _encodes,
      message='--%s must be a UTF-8 path: the scripts pass paths to '
      'TensorFlow as text' % name)


# What TensorFlow's checkpoint reader takes a checkpoint's path for: a file
# name pattern, in which '[1]' stands for '1', not for itself.
_PATTERN_CHARACTERS = '*?[\\'


def checkpoint_directory(name):
  """Registers validators: flag `name`, a directory of checkpoints, must be
  a `path_flag`, and not hold a character of a file name pattern, with which
  training saves checkpoints that nothing reads back (a resume failed, an
  evaluator skipped each as deleted)."""
  path_flag(name)
  tf.app.flags.register_validator(
      name, lambda value: not set(value) & set(_PATTERN_CHARACTERS),
      message='--%s must not hold *, ?, [ or \\, which TensorFlow takes for '
      'a file name pattern when it reads checkpoints' % name)


def non_negative(name):
  """Registers a validator: flag `name` must be 0 to MAX_FLAG_INT."""
  tf.app.flags.register_validator(
      name, lambda value: 0 <= value <= MAX_FLAG_INT,
      message='--%s must not be negative, nor above %d'
      % (name, MAX_FLAG_INT))


@contextlib.contextmanager
def deleted_as_not_found(checkpoint_path):
  """Turns any error of reading a checkpoint whose index file is gone into
  NotFoundError, which callers take for a checkpoint the trainer deleted (it
  deletes old ones at any time, the index first). TensorFlow reports a file
  removed mid-read as NotFoundError, or, when it goes between being found
  and being opened, as another OpError; the Saver as ValueError."""
  try:
    yield
  except (ValueError, IndexError, tf.errors.OpError) as e:
    if (isinstance(e, tf.errors.NotFoundError) or
        tf.io.gfile.exists(checkpoint_path + '.index')):
      raise
    raise tf.errors.NotFoundError(
        None, None, '%s was deleted' % checkpoint_path) from e


@contextlib.contextmanager
def _reading(checkpoint_path):
  """Turns a damaged checkpoint's TensorFlow error into one naming it."""
  with deleted_as_not_found(checkpoint_path):
    try:
      yield
    except tf.errors.NotFoundError:
      raise  # Gone: the caller decides (a trainer deletes old ones).
    # A truncated data file raises IndexError from the checkpoint reader.
    except (tf.errors.OpError, IndexError) as e:
      raise ValueError('cannot read checkpoint %s (%s): move its files away '
                       'to use the one before'
                       % (checkpoint_path, one_line(e)))


def check_checkpoint(checkpoint_path, var_map):
  """Checks that a checkpoint holds every variable with the model's shape.

  Restoring a checkpoint of another model fails deep inside TensorFlow with
  a message about Assign ops; this names the variable and both shapes. Every
  value is read, so a truncated or damaged file is reported here, by name,
  rather than during the restore.

  Args:
    checkpoint_path: checkpoint prefix, e.g. '/tmp/cifar10_train/model.ckpt-5'.
    var_map: dict name in the checkpoint -> variable of the model.

  Raises:
    ValueError: naming the checkpoint, and the variable and the shapes, or
      what could not be read.
    tf.errors.NotFoundError: if the checkpoint is gone (a trainer may delete
      old ones at any time).
  """
  with _reading(checkpoint_path):
    reader = tf.train.load_checkpoint(checkpoint_path)
    shapes = reader.get_variable_to_shape_map()
    # A shape that differs says more about what went wrong than a missing
    # name.
    for name in sorted(set(var_map) & set(shapes)):
      expected = var_map[name].shape.as_list()
      if list(shapes[name]) != expected:
        raise ValueError(
            'checkpoint %s was written by a different model: variable %s has '
            'shape %s there but %s here'
            % (checkpoint_path, name, list(shapes[name]), expected))
    missing = sorted(set(var_map) - set(shapes))
    if missing:
      raise ValueError(
          'checkpoint %s has no variable %s: it was written by a different '
          'model' % (checkpoint_path, missing[0]))
    for name in var_map:
      reader.get_tensor(name)


def check_output_file(flag):
  """Fails if the file that flag `flag` names cannot be written, or is a
  file that it would replace and that is not a JSON object, as the reports
  are (a checkpoint, a data file: a mistyped path must not destroy it).
  Call it up front, before any long work, as well as before each write.

  Raises:
    UsageError: naming the flag and what is wrong.
  """
  path = getattr(FLAGS, flag)
  parent = os.path.dirname(os.path.abspath(path))
  if os.path.isdir(path):
    problem = 'is a directory'
  elif not os.path.isdir(parent):
    problem = 'has no directory %s' % parent
  elif not os.access(parent, os.W_OK):
    problem = 'is in a directory we cannot write, %s' % parent
  elif os.path.isfile(path):
    problem = _not_replaceable(path)
  else:
    problem = None
  if problem:
    raise UsageError('--%s=%s %s' % (flag, path, problem))


def _not_replaceable(path, max_bytes=1 << 20):
  """Why the file `path` must not be replaced by a report, or None if it
  holds a JSON object (of at most `max_bytes`), as reports do, or nothing."""
  refused = 'is a file that is not a JSON object: not replaced'
  try:
    if os.path.getsize(path) > max_bytes:
      return refused
    with open(path, 'rb') as f:
      text = f.read()
  except OSError as e:
    return 'cannot be read (%s): not replaced' % (e.strerror or e)
  try:
    return None if not text or isinstance(json.loads(text), dict) else refused
  except ValueError:
    return refused


def make_output_dir(flag, path):
  """Creates directory `path`, given by flag `flag`, if need be, and proves
  it writable with a temporary file of our own: TensorFlow's summary writer
  only logs a failed write, and a trainer would fail at its first save.

  Raises:
    UsageError: naming the flag, if the directory cannot be created or
      written.
  """
  try:
    tf.io.gfile.makedirs(path)
    with tempfile.TemporaryFile(dir=path):
      pass
  except (OSError, tf.errors.OpError) as e:
    raise UsageError('--%s=%s is not writable: %s' % (flag, path,
                                                      one_line(e)))


def write_json(flag, data):
  """Writes `data` as JSON to the file that flag `flag` names, atomically
  (never a half-written file).

  Raises:
    UsageError: naming the flag, if the file may not be replaced (see
      `check_output_file`; it may have changed since that first check).
    ValueError: naming the flag, if the file cannot be written.
  """
  check_output_file(flag)
  path = getattr(FLAGS, flag)
  try:
    write_atomically(path, json.dumps(data, indent=2))
  except OSError as e:
    raise ValueError('cannot write --%s=%s (%s)' % (flag, path,
                                                    e.strerror or e))


def write_atomically(path, text):
  """Writes `text` to `path` through a temporary file renamed over it, so
  that no reader sees half of it; nothing is left behind on failure.

  A symbolic link's target is what is replaced, not the link. A path that
  is there but is not a regular file (a FIFO, /dev/stdout) is written to
  as it is: a rename would put a file in its place.
  """
  path = os.path.realpath(path)
  if os.path.exists(path) and not os.path.isfile(path):
    with open(path, 'w') as f:
      f.write(text)
    return
  tmp = '%s.tmp-%d' % (path, os.getpid())
  try:
    with open(tmp, 'w') as f:
      f.write(text)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def define_checkpoint_dir():
  """Defines --checkpoint_dir, for the scripts that read checkpoints."""
  tf.app.flags.DEFINE_string('checkpoint_dir', '/tmp/cifar10_train',
                             """Directory where to read model checkpoints.""")
  checkpoint_directory('checkpoint_dir')


def checkpoint_files(directory):
  """The trainers' checkpoints in `directory`, found by their files, oldest
  first: what the 'checkpoint' state file should list."""
  if not tf.io.gfile.isdir(directory):
    return []
  steps = sorted(int(match.group(1)) for match in map(
      CHECKPOINT_FILE.match, tf.io.gfile.listdir(directory))
                 if match and match.group(2, 3) == ('index', None))
  return [os.path.join(directory, '%s-%d' % (CHECKPOINT_BASENAME, step))
          for step in steps]


# The state files checkpoint_state has warned about.
_damaged_state_files = set()


def checkpoint_state(directory):
  """The parsed 'checkpoint' state file of `directory`, None if it is
  missing or damaged.

  TensorFlow warns about a file it cannot parse and returns None, but it
  raises ValueError for one that names no checkpoint (an empty file) and
  UnicodeDecodeError for one that is not UTF-8 text, naming no file; such
  files count as damaged too.
  """
  try:
    return tf.train.get_checkpoint_state(directory)
  except ValueError as e:  # UnicodeDecodeError is one.
    path = os.path.join(directory, 'checkpoint')
    # Once per file: evaluation reads it at every poll.
    if path not in _damaged_state_files:
      _damaged_state_files.add(path)
      tf.logging.warning('%s is not a checkpoint state file (%s): ignored',
                         path, one_line(e))
    return None


def listed_checkpoints(directory):
  """The checkpoints of `directory`, oldest first.

  Those TensorFlow's 'checkpoint' state file lists, looked up in `directory`
  by name: the file holds the paths it was given, absolute ones too, which in
  a copied directory name the original's checkpoints, and in a moved one
  files that are gone.
  Without a state file that names any of them, those found by their files.
  """
  state = checkpoint_state(directory)
  listed = (list(state.all_model_checkpoint_paths) or
            [state.model_checkpoint_path]) if state else []
  here = []
  for path in listed:
    path = os.path.join(directory, os.path.basename(path))
    if path not in here and tf.io.gfile.exists(path + '.index'):
      here.append(path)
  return here or checkpoint_files(directory)


def latest_checkpoint(checkpoint_dir):
  """The newest checkpoint in `checkpoint_dir` (see `listed_checkpoints`).

  Raises:
    ValueError: if there is none.
  """
  checkpoints = listed_checkpoints(checkpoint_dir)
  if not checkpoints:
    if tf.io.gfile.isdir(checkpoint_dir):
      why = ''
    elif tf.io.gfile.exists(checkpoint_dir):
      why = ': not a directory'
    else:
      why = ': no such directory'
    raise ValueError('no checkpoint in --checkpoint_dir=%s%s'
                     % (checkpoint_dir, why))
  return checkpoints[-1]


def checkpoint_step(checkpoint_path):
  """The global step saved in a checkpoint.

  Raises:
    ValueError: naming the checkpoint if it has none.
    tf.errors.NotFoundError: if the checkpoint is gone.
  """
  with _reading(checkpoint_path):
    reader = tf.train.load_checkpoint(checkpoint_path)
    # Not NotFoundError, which would pass for a checkpoint deleted meanwhile.
    if not reader.has_tensor('global_step'):
      raise ValueError('checkpoint %s has no variable global_step: it was '
                       'written by a different model' % checkpoint_path)
    return int(reader.get_tensor('global_step'))
