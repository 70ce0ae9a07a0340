"""What of CPython's test.test_asyncio runs on which loop, and what is left out.

Three tables, read by _worker.py:

RETARGET   test classes that build a *specific* stock loop themselves
           (asyncio.SelectorEventLoop(), SelectorEventLoop(EpollSelector()),
           a mocked BaseEventLoop) although what they test is generic loop
           behaviour: the harness makes them build the loop under test instead.
           Everything else gets "the" loop through asyncio's default policy,
           whose loop factory the harness replaces (see _worker.install_loop).

EXCLUDE    tests that cannot apply to another event loop: unit tests of the
           stock loop's own classes driven through mocks, Windows-only code,
           and duplicates that differ from a kept class only in which
           selector / child watcher the *stock* loop uses.  Excluded tests are
           left out on both loops, so the comparison stays like for like;
           `run.py --no-exclude` runs them anyway.

STOCK_BY_DESIGN   tests that deliberately build a stock loop
           (e.g. asyncio.run(loop_factory=asyncio.EventLoop)); a stock
           _UnixSelectorEventLoop created by any other test under --loop
           aioring is reported as a leak of the injection.

Patterns are matched against "module.Class.test" ids (module without the
"test.test_asyncio." prefix) with fnmatch.  An entry may be limited to some
Python versions with `versions=(min, max)` (inclusive, (3, 12) style).
"""

# --------------------------------------------------------------------------
# Classes re-pointed at the loop under test.
#
# kind:
#   "create_event_loop"  the class's create_event_loop() returns a new loop
#                        of the chosen kind (test_events, test_sendfile,
#                        test_sock_lowlevel: EventLoopTestsMixin & co.)
#   "new_loop"           functional.FunctionalTestCaseMixin.new_loop()
#   "SelectorEventLoop"  setUp() calls asyncio.SelectorEventLoop(): that name
#                        is the chosen loop class while setUp runs
#   "runner_policy"      test_runners.BaseTest: asyncio.run()/Runner get a
#                        real loop of the chosen kind (upstream: a
#                        BaseEventLoop with a mocked selector), with the
#                        test's shutdown_asyncgens bookkeeping kept
# --------------------------------------------------------------------------
RETARGET = {
    # test_events: the generic loop tests (EventLoopTestsMixin +
    # SubprocessTestsMixin) on the epoll selector, the stock loop's default
    # on Linux; the poll/select variants are excluded below as duplicates.
    "test_events.EPollEventLoopTests": "create_event_loop",
    "test_sendfile.EPollEventLoopTests": "create_event_loop",
    "test_sock_lowlevel.EPollEventLoopTests": "create_event_loop",
    "test_buffered_proto.BufferedProtocolSelectorTests": "new_loop",
    "test_server.SelectorStartServerTests": "new_loop",
    "test_sslproto.SelectorStartTLSTests": "new_loop",
    # create_connection / create_server / create_unix_* argument handling
    # and error paths (aioring uses asyncio's own code for these, so the
    # tests' mock.patch('asyncio.base_events.socket') still applies)
    "test_base_events.BaseEventLoopWithSelectorTests": "SelectorEventLoop",
    "test_unix_events.SelectorEventLoopUnixSocketTests": "SelectorEventLoop",
    # add_signal_handler & co. (asyncio's own code on aioring too)
    "test_unix_events.SelectorEventLoopSignalTests": "SelectorEventLoop",
    "test_runners.BaseTest": "runner_policy",
}


def _x(pattern, reason, versions=None):
    return (pattern, reason, versions)


WINDOWS = "Windows only (proactor loop / Windows pipes); skipped by CPython itself on Linux"
SELECTOR_DUP = ("duplicate of EPollEventLoopTests with another selector: the "
                "selector is a choice inside the stock loop, the same tests "
                "run once on the loop under test")
WATCHER_DUP = ("duplicate of the subprocess tests with another child watcher "
               "of the stock loop; the tests run once, with the Python "
               "version's default watcher")

SELECTOR_KEY = ("calls the private _sock_sendfile_native_impl() with a mock "
                "future and then asserts the stock selector's registration "
                "(loop._selector.get_key(sock)); a loop without a selector "
                "cannot answer that (aioring runs asyncio's own "
                "_sock_sendfile_native_impl, exercised by the other tests "
                "of this class)")

EXCLUDE = [
    # whole modules
    _x("test_proactor_events.*", WINDOWS),
    _x("test_windows_events.*", WINDOWS),
    _x("test_windows_utils.*", WINDOWS),
    _x("test_selector_events.*",
       "unit tests of the stock selector loop's internals: "
       "BaseSelectorEventLoop with a mock selector, _SelectorSocketTransport "
       "/ _SelectorDatagramTransport driven through mock sockets "
       "(_read_ready, _write_ready, _buffer); no other loop has these classes"),

    # Windows / proactor classes inside generic modules
    _x("test_buffered_proto.BufferedProtocolProactorTests.*", WINDOWS),
    _x("test_server.ProactorStartServerTests.*", WINDOWS),
    _x("test_sslproto.ProactorStartTLSTests.*", WINDOWS),

    # selector duplicates
    _x("test_events.PollEventLoopTests.*", SELECTOR_DUP),
    _x("test_events.SelectEventLoopTests.*", SELECTOR_DUP),
    _x("test_events.KqueueEventLoopTests.*", SELECTOR_DUP),
    _x("test_sendfile.PollEventLoopTests.*", SELECTOR_DUP),
    _x("test_sendfile.SelectEventLoopTests.*", SELECTOR_DUP),
    _x("test_sendfile.KqueueEventLoopTests.*", SELECTOR_DUP),
    _x("test_sock_lowlevel.PollEventLoopTests.*", SELECTOR_DUP),
    _x("test_sock_lowlevel.SelectEventLoopTests.*", SELECTOR_DUP),
    _x("test_sock_lowlevel.KqueueEventLoopTests.*", SELECTOR_DUP),

    # stock-only test internals inside retargeted classes
    _x("test_base_events.BaseEventLoopWithSelectorTests.test_accept_connection_retry",
       "calls the selector loop's private _accept_connection() with a mock "
       "socket; aioring accepts through a ring request (listener.pxi)"),
    _x("test_base_events.BaseEventLoopWithSelectorTests.test_accept_connection_exception",
       "calls the selector loop's private _accept_connection() with a mock "
       "socket and mocks _remove_reader/_start_serving; aioring accepts "
       "through a ring request (listener.pxi)"),

    _x("test_base_events.BaseEventLoopWithSelectorTests.test_create_server_soreuseport_only_defined",
       "passes on the stock loop only because its selector rejects the mock "
       "socket's fileno() with ValueError (selectors._fileobj_to_fd); the "
       "reuse_port check under test raises nothing here (SO_REUSEPORT mocked "
       "as defined), so any other loop fails it for its own reason"),
    _x("test_base_events.BaseEventLoopWithSelectorTests.test_log_slow_callbacks",
       "patches asyncio.base_events.logger; aioring logs the same 'Executing "
       "<Handle ...> took N seconds' warning to the same asyncio logger, "
       "through a reference taken at import (loop.pyx), which the patch "
       "does not reach (checked by hand: identical messages on both loops)"),
    _x("test_events.*EventLoopTests.test_timeout_rounding",
       "replaces the stock loop's private _run_once() to count iterations "
       "and reads loop._selector; aioring's iteration is a C method"),
    _x("test_unix_events.SelectorEventLoopSignalTests.test_close_on_finalizing",
       "patches asyncio.unix_events.sys to fake interpreter shutdown; "
       "aioring's close() makes the same sys.is_finalizing() check and "
       "warning (loop.pyx close()) with its own sys module"),
    _x("test_unix_events.SelectorEventLoopUnixSockSendfileTests.test_sock_sendfile_blocking_error",
       SELECTOR_KEY),
    _x("test_unix_events.SelectorEventLoopUnixSockSendfileTests.test_sock_sendfile_cancel1",
       SELECTOR_KEY),
    _x("test_unix_events.SelectorEventLoopUnixSockSendfileTests.test_sock_sendfile_cancel2",
       SELECTOR_KEY),
    _x("test_unix_events.SelectorEventLoopUnixSockSendfileTests.test_sock_sendfile_exception",
       SELECTOR_KEY),
    _x("test_unix_events.SelectorEventLoopUnixSockSendfileTests.test_sock_sendfile_os_error_first_call",
       SELECTOR_KEY),
    _x("test_unix_events.SelectorEventLoopUnixSockSendfileTests.test_sock_sendfile_os_error_next_call",
       SELECTOR_KEY),

    # subprocess: child watchers are the stock loop's mechanism
    _x("test_subprocess.SubprocessSafeWatcherTests.*", WATCHER_DUP),
    _x("test_subprocess.SubprocessFastWatcherTests.*", WATCHER_DUP),
    _x("test_subprocess.SubprocessMultiLoopWatcherTests.*", WATCHER_DUP),
    _x("test_subprocess.SubprocessPidfdWatcherTests.*", WATCHER_DUP,
       versions=((3, 0), (3, 11))),
    _x("test_subprocess.SubprocessThreadedWatcherTests.*", WATCHER_DUP,
       versions=((3, 12), (3, 99))),
    _x("test_subprocess.MultiLoopChildWatcherTests.*",
       "tests the stock MultiLoopChildWatcher class"),
    _x("test_subprocess.GenericWatcherTests.*",
       "asserts the stock loop's calls into a mock child watcher "
       "(__enter__, is_active, add_child_handler); a loop that waits for its "
       "children another way (aioring: pidfd) never consults the watcher"),

    # test_unix_events: unit tests of stock classes with mocks
    _x("test_unix_events.UnixReadPipeTransportTests.*",
       "unit tests of the stock _UnixReadPipeTransport class on a test loop "
       "with a mock pipe and patched os.read/os.fstat; pipes on the loop "
       "under test are covered by test_events' pipe tests"),
    _x("test_unix_events.UnixWritePipeTransportTests.*",
       "unit tests of the stock _UnixWritePipeTransport class on a test loop "
       "with a mock pipe and patched os.write; pipes on the loop under test "
       "are covered by test_events' pipe tests"),
    _x("test_unix_events.AbstractChildWatcherTests.*",
       "tests the stock child-watcher classes"),
    _x("test_unix_events.BaseChildWatcherTests.*",
       "tests the stock child-watcher classes"),
    _x("test_unix_events.SafeChildWatcherTests.*",
       "unit tests of the stock SafeChildWatcher with mocked os.waitpid and "
       "a test loop"),
    _x("test_unix_events.FastChildWatcherTests.*",
       "unit tests of the stock FastChildWatcher with mocked os.waitpid and "
       "a test loop"),
]


STOCK_BY_DESIGN = [
    ("test_runners.RunTests.test_loop_factory_default_event_loop",
     "asyncio.run(loop_factory=asyncio.EventLoop) asks for the stock loop"),
]


# --------------------------------------------------------------------------
# Feature areas, for grouping run.py --compare's list (first match wins).
# Patterns are regular expressions searched in the test id.
# --------------------------------------------------------------------------
AREAS = [
    ("TLS", r"(^test_ssl\.|^test_sslproto\.|ssl|tls)"),
    ("subprocesses", r"(^test_subprocess\.|subprocess)"),
    ("loop.sendfile", r"(^test_sendfile\.EPollEventLoopTests\.test_sendfile|"
                      r"\.test_sendfile)"),
    ("pipes", r"(pipe|pty)"),
    ("UDP / datagrams", r"(datagram|udp)"),
    ("already supported: callbacks, timers, sockets, streams, servers, "
     "signals, threads, executors", r""),
]
