# Callback handles: what call_soon / call_later / call_at return.
#
# They follow asyncio.Handle and asyncio.TimerHandle attribute for attribute
# (_callback, _args, _cancelled, _loop, _context, _source_traceback, _when,
# _scheduled, and the methods), but are extension types, so
# isinstance(h, asyncio.Handle) is False (docs/differences.md).

from cpython.contextvars cimport PyContext_CopyCurrent, PyContext_Enter, PyContext_Exit

import inspect as _inspect
from contextvars import Context as _Context
from asyncio import format_helpers as _format_helpers

# 3.13 added a keyword-only `debug` to this private helper.
_callback_source = _format_helpers._format_callback_source
cdef bint _callback_source_takes_debug = (
    'debug' in _inspect.signature(_callback_source).parameters)


cdef object _format_callback(object callback, object args, bint debug):
    if _callback_source_takes_debug:
        return _callback_source(callback, args, debug=debug)
    return _callback_source(callback, args)


cdef object _extract_stack():
    # Cython functions have no Python frames: the innermost frame is already
    # the code that called the loop method, where asyncio's stack also ends.
    return _format_helpers.extract_stack(sys._getframe(0))


cdef class Handle:
    """A callback scheduled with call_soon(), call_soon_threadsafe() or
    add_signal_handler()."""
    def __init__(self, callback, args, loop, context=None):
        if not isinstance(loop, BaseLoop):
            raise TypeError(f'{type(self).__name__} needs an aioring loop, got {loop!r}')
        self._setup(callback, args, <BaseLoop>loop, context)

    cdef _setup(self, object callback, object args, BaseLoop loop, object context):
        self.callback = callback
        self.args = args
        self.loop = loop
        self.context = PyContext_CopyCurrent() if context is None else context
        if loop._debug:
            self.source_traceback = _extract_stack()

    # -- asyncio.Handle's attributes, for code and tools that read them ----

    @property
    def _callback(self):
        return self.callback

    @property
    def _args(self):
        return self.args

    @property
    def _cancelled(self):
        return self.is_cancelled

    @property
    def _loop(self):
        return self.loop

    @property
    def _context(self):
        return self.context

    @property
    def _source_traceback(self):
        return self.source_traceback

    @property
    def _repr(self):
        return self.repr_cache

    def get_context(self):
        return self.context

    def cancelled(self):
        return self.is_cancelled

    def cancel(self):
        self._cancel()

    cdef _cancel(self):
        if not self.is_cancelled:
            self.is_cancelled = True
            if self.loop._debug:
                # Keep the callback's description for the slow-callback
                # warning, as asyncio does.
                self.repr_cache = repr(self)
            self.callback = None
            self.args = None

    cdef list _repr_info(self):
        cdef list info = [type(self).__name__]
        if self.is_cancelled:
            info.append('cancelled')
        if self.callback is not None:
            info.append(_format_callback(self.callback, self.args, self.loop._debug))
        if self.source_traceback:
            frame = self.source_traceback[-1]
            info.append(f'created at {frame[0]}:{frame[1]}')
        return info

    def __repr__(self):
        if self.repr_cache is not None:
            return self.repr_cache
        return '<{}>'.format(' '.join(self._repr_info()))

    def _run(self):
        self.run()

    cdef run(self):
        cdef object callback = self.callback
        cdef object args = self.args
        cdef object context = self.context
        try:
            if type(context) is not _Context:
                # whatever the caller passed as context=: asyncio calls its
                # run(), and so do we
                context.run(callback, *args)
            else:
                PyContext_Enter(context)
                try:
                    if args:
                        callback(*args)
                    else:
                        callback()
                finally:
                    PyContext_Exit(context)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._report(exc)

    cdef _report(self, exc):
        cb = _format_callback(self.callback, self.args, self.loop._debug)
        context = {
            'message': f'Exception in callback {cb}',
            'exception': exc,
            'handle': self,
        }
        if self.source_traceback:
            context['source_traceback'] = self.source_traceback
        self.loop.call_exception_handler(context)


cdef class TimerHandle(Handle):
    """A callback scheduled with call_later() or call_at()."""
    def __init__(self, when, callback, args, loop, context=None):
        Handle.__init__(self, callback, args, loop, context)
        self.due = when
        self.when_given = when

    @property
    def _when(self):
        return self.due if self.when_given is None else self.when_given

    @property
    def _scheduled(self):
        return self.scheduled

    def when(self):
        return self.due if self.when_given is None else self.when_given

    cdef list _repr_info(self):
        cdef list info = Handle._repr_info(self)
        info.insert(2 if self.is_cancelled else 1, f'when={self.when()}')
        return info

    def __hash__(self):
        return hash(self.due)

    def __richcmp__(self, other, int op):
        if not isinstance(other, TimerHandle):
            return NotImplemented
        cdef TimerHandle o = <TimerHandle>other
        if op == 0:
            return self.due < o.due
        if op == 1:
            return self.due <= o.due
        if op == 4:
            return self.due > o.due
        if op == 5:
            return self.due >= o.due
        equal = (self.due == o.due and self.callback == o.callback and
                 self.args == o.args and self.is_cancelled == o.is_cancelled)
        return equal if op == 2 else not equal

    def cancel(self):
        if not self.is_cancelled:
            self.loop._timer_handle_cancelled(self)
        self._cancel()


cdef extern from "Python.h":
    ctypedef PyObject *(*vectorcallfunc)(PyObject *callable, PyObject **args, size_t nargsf,
                                         PyObject *kwnames)
    vectorcallfunc PyVectorcall_Function(PyObject *callable)
    PyObject *PyObject_Vectorcall(PyObject *callable, PyObject **args, size_t nargsf,
                                  PyObject *kwnames)
    size_t PY_VECTORCALL_ARGUMENTS_OFFSET
    bint PyMethod_Check(object o)
    PyObject *PyMethod_GET_FUNCTION(object o)
    PyObject *PyMethod_GET_SELF(object o)


cdef inline PyObject *_call_with_raw(object func, object arg) noexcept:
    # func(arg): its result (a new reference), or NULL with the exception
    # set, for callers that handle the error without a try block (each costs
    # a save of the exception state on the way in).  No argument tuple; a
    # bound method's function called with its self directly, as Cython's
    # generic call does, without its dispatch on the callable's type first
    # (about 40 instructions less); and the callable's own vectorcall entry
    # called directly, which is what PyObject_Vectorcall does less its
    # thread-state lookup and its debugging check of the result (about 40
    # more).
    cdef PyObject *args[2]
    cdef PyObject *callable
    cdef size_t nargsf
    cdef vectorcallfunc call
    if PyMethod_Check(func):
        args[0] = PyMethod_GET_SELF(func)
        args[1] = <PyObject *>arg
        callable = PyMethod_GET_FUNCTION(func)
        call = PyVectorcall_Function(callable)
        if call != NULL:
            return call(callable, args, 2, NULL)
        return PyObject_Vectorcall(callable, args, 2, NULL)
    args[0] = NULL      # scratch space the callee may use (ARGUMENTS_OFFSET)
    args[1] = <PyObject *>arg
    nargsf = 1 | PY_VECTORCALL_ARGUMENTS_OFFSET
    call = PyVectorcall_Function(<PyObject *>func)
    if call != NULL:
        return call(<PyObject *>func, &args[1], nargsf, NULL)
    return PyObject_Vectorcall(<PyObject *>func, &args[1], nargsf, NULL)


cdef int _raised() except -1:
    # Lets a try block catch the exception that a C call (_call_with_raw)
    # left set: call this right after that call returned NULL.
    return -1

