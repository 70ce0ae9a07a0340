# Declarations of the loop extension: handles, operation records and the loop.
from libc.stdint cimport uint64_t, int64_t
from cpython.ref cimport PyObject
from libc.stdint cimport uint16_t
from aioring._ring.ring cimport ar_ring, ar_bufring, msghdr, iovec
cimport cython

# Classes marked @cython.final are never subclassed: their methods are
# called directly, not through the vtable, so the C compiler may inline them
# into the hot paths.

# Chunks one send hands the kernel at most (the rest waits for the next).
cdef enum:
    SEND_IOV_MAX = 64


cdef class BaseLoop


cdef class Handle:
    cdef:
        object callback
        object args             # tuple, or None once cancelled
        object context
        BaseLoop loop
        bint is_cancelled
        object repr_cache
        object source_traceback
        object __weakref__

    cdef _setup(self, object callback, object args, BaseLoop loop, object context)
    cdef _cancel(self)
    cdef list _repr_info(self)
    cdef run(self)
    cdef _report(self, exc)


cdef class TimerHandle(Handle):
    cdef:
        double due              # loop.time() at which it runs
        object when_given       # call_at's `when` as given (int stays int), or None
        bint scheduled          # in the loop's timer heap
        unsigned long long seq  # ties between equal `when`s run first-in first-out


cdef class Operation:
    # One io_uring request.  Its address is the request's user_data; the
    # loop holds a reference from submission until the final completion (a
    # CQE without IORING_CQE_F_MORE), so everything the kernel may touch
    # stays alive that long.
    cdef bint in_flight
    # Borrowed: the loop owns its operations, and a strong reference back
    # would keep an unclosed loop alive for ever (the kernel's reference to
    # the operation holds the operation).  NULL once the loop lets go.
    cdef PyObject *loop
    # The loop's list of the program's operations in flight (borrowed
    # links: the loop holds each listed operation by its submission
    # reference): cheaper to keep than a set, walked only at close.
    cdef PyObject *prev_op
    cdef PyObject *next_op
    cdef bint listed            # in user_ops: taken out at its final completion
    cdef bint resident          # in resident_ops: taken out by its owner
    cdef int complete(self, int res, unsigned flags) except -1


cdef class InternalRead(Operation):
    # A read the loop keeps pending on one of its own descriptors: the
    # cross-thread wake-up eventfd and the signal wake-up socket.
    cdef:
        int fd
        int kind
        char buf[512]


cdef enum:
    SPARE_COUNT = 128


@cython.final
cdef class SpareBytes:
    # bytes objects kept for received data (sparebytes.pxi)
    cdef:
        PyObject *items[SPARE_COUNT]
        int count
        Py_ssize_t total        # their sizes
        int evict_next          # the slot a full pool gives up next
    cdef bytes make(self, const char *buf, Py_ssize_t n)
    cdef void offer(self, PyObject *o) noexcept
    cdef bint make_room(self, Py_ssize_t size) noexcept
    cdef void offer_list(self, list chunks) noexcept


@cython.final
cdef class RecvBuffers:
    # The loop's provided-buffer ring for stream receives (recvbuffers.pxi).
    cdef:
        ar_bufring br
        bint ready
        int error                       # -errno when setup failed
        readonly unsigned long long enobufs     # recvs that found the pool empty
        readonly unsigned long long used        # buffers the kernel filled and got back
        unsigned long long grown_at     # loop iteration of the last growth
    cdef int setup(self, ar_ring *ring)
    cdef char *addr(self, uint16_t bid) noexcept
    cdef void recycle(self, uint16_t bid) noexcept
    cdef unsigned provided(self) noexcept
    cdef exhausted(self, unsigned long long iteration)
    cdef free(self, ar_ring *ring)
    cdef forget(self)
    cdef dict info(self, ar_ring *ring)


@cython.final
cdef class SocketStream:
    # The state and I/O of one stream transport (stream.pxi); the
    # asyncio.Transport the protocol sees is a thin front for it.
    cdef:
        BaseLoop loop           # None once connection_lost() has run
        BaseLoop ring_loop      # kept until the socket is released
        object transport        # the front object (None once released)
        object sock             # None once connection_lost() has run
        object closed_sock      # the socket, until the kernel lets go of it
        bint counted_release    # counted in the loop's pending_releases
        int fd
        int slot                # fixed-file slot, or -1
        object protocol
        bint buffered           # the protocol is a BufferedProtocol
        object data_received    # protocol.data_received (not buffered)
        object get_buffer       # protocol.get_buffer (buffered)
        object buffer_updated   # protocol.buffer_updated (buffered)
        bint protocol_connected
        object server
        bint closing
        bint paused             # pause_reading()
        bint eof                # write_eof()
        int conn_lost
        bint protocol_paused    # pause_writing() called
        Py_ssize_t high_water
        Py_ssize_t low_water
        # receiving
        Operation recv_op       # RecvSelectOp, RecvOp or ReadableOp in flight, or None
        bint direct             # direct receive: poll, then recv into get_buffer()
        unsigned char small_reads   # direct receives in a row that were small
        list stash              # chunks received while paused (b'' = EOF)
        bint unread             # received bytes the protocol never got
        # sending
        list wbuf               # bytes objects not yet sent
        Py_ssize_t woff         # bytes of wbuf[0] already sent
        Py_ssize_t wsize        # bytes in wbuf not yet sent
        SendOp send_op          # reused; in flight or idle
        bint send_queued        # waiting in the loop's send queue
        bint send_backlog       # the socket took less than it was offered
        int closed_fresh        # see close(): asyncio's conn_lost until ours
        PyObject *send_next     # the next stream in that queue
        object empty_waiter     # sendfile's wait for an empty buffer

    cdef _arm_recv(self)
    cdef _cancel_recv(self)
    cdef int _recv_done(self, char *buf, int res, bint final) except -1
    cdef bint _deliver(self, char *buf, Py_ssize_t n) except -1
    cdef bint _deliver_buffered(self, char *buf, Py_ssize_t n) except -1
    cdef bint _take_buffer(self, Py_buffer *view) except -1
    cdef _go_direct(self)
    cdef int _readable(self, int res) except -1
    cdef bint _callback_failed(self, bint missing, str name, str message) except -1
    cdef _keep(self, object chunk)
    cdef _on_eof(self)
    cdef int _write(self, object data) except -1
    cdef int _queue_send(self) except -1
    cdef _drop_write(self)
    cdef _send_now(self)
    cdef int _submit_send(self) except -1
    cdef int _send_done(self, int res) except -1
    cdef _maybe_pause_protocol(self)
    cdef _maybe_resume_protocol(self)
    cdef _fatal_error(self, exc, message)
    cdef _force_close(self, exc)
    cdef _maybe_release(self)


cdef extern from "sys/socket.h":
    struct sockaddr_storage:
        unsigned short ss_family


cdef class ReadOp(Operation):
    # The read request of a datagram or pipe transport (ringfile.pxi):
    # into `buf` (the transport's max_size bytes, owned by this record); a
    # recvmsg also takes the sender's address into `name`.  The record is
    # reused: one request in flight per transport.
    cdef:
        object transport        # the transport, while in flight
        char *buf
        Py_ssize_t size
        msghdr msg
        iovec iov
        sockaddr_storage name


cdef class RingFile:
    # A transport's file (socket, pipe, character device) as the ring uses
    # it (ringfile.pxi): its fixed-file slot, its one request at a time, and
    # the close that waits for the kernel to let go of it.
    cdef:
        BaseLoop loop           # kept until the file is released
        Operation op            # reused: at most one in flight
        int fd
        int slot                # fixed-file slot, or -1
        object closed_file      # the file, until the kernel lets go of it
        bint counted_release    # counted in the loop's pending_releases

    cdef cancel(self)
    cdef bint busy(self)
    cdef cancel_all(self)
    cdef release(self, file)
    cdef release_unclosed(self)


cdef class RingReader(RingFile):
    # The receiving side of a datagram or pipe transport: one read request
    # kept armed while the transport reads.
    cdef:
        bint datagrams          # recvmsg (datagram socket), else read
        bint delivering         # a completion waits in the ready queue (its data in op.buf)
        list stash              # what arrived while paused

    @staticmethod
    cdef RingReader new(BaseLoop loop, object file, Py_ssize_t size, bint datagrams)
    cdef int setup(self, BaseLoop loop, object file, Py_ssize_t size, bint datagrams) except -1
    cdef arm(self, transport)
    cdef _done(self, transport, int res)
    cdef keep(self, object item)


cdef class SendToOp(Operation):
    # The send of a datagram transport in flight (datagram.pxi): one
    # sendmsg of the datagram at the head of the transport's queue.  `keep`
    # holds that (bytes, address) item, and the record the msghdr, iovec and
    # destination address the kernel reads, until the final completion.
    cdef:
        object transport        # the transport, while in flight
        object keep
        msghdr msg
        iovec iov
        sockaddr_storage name


cdef class DatagramSocket(RingReader):
    # The socket of a datagram transport (datagram.pxi): RingReader's
    # recvmsg, and the sends of the datagrams the socket did not take at
    # once, one SENDMSG at a time.  One file, one slot, two requests: its
    # close waits for both.
    cdef:
        SendToOp send_op        # reused: at most one in flight
        bint send_delivering    # a send's completion waits in the ready queue
        bint connected          # send() without an address, as asyncio does
        int family
        bint dontwait           # sends do not wait in the kernel: a poll for room, then again
        bint polling            # send_op is that poll, not a send

    @staticmethod
    cdef DatagramSocket create(BaseLoop loop, object sock, Py_ssize_t size)
    cdef cancel_send(self)
    cdef submit(self, transport)
    cdef _wait_for_room(self, transport)
    cdef _sent(self, transport, int res, object item)


cdef class WriteOp(Operation):
    # The write of a pipe transport in flight (pipes.pxi): up to
    # SEND_IOV_MAX of its queued chunks in one write/writev; `keep` holds
    # their memory until the final completion.
    cdef:
        object transport        # the transport, while in flight
        object keep
        iovec iov[SEND_IOV_MAX]


cdef class PipeWriter(RingFile):
    # The sending side of a write pipe transport (pipes.pxi).
    cdef:
        list chunks             # bytes not yet written, in order
        Py_ssize_t offset       # bytes of chunks[0] already written
        readonly Py_ssize_t size    # bytes in chunks not yet written
        bint polled             # the file cannot wait in the ring: poll, then write

    @staticmethod
    cdef PipeWriter new(BaseLoop loop, int fd)
    cdef submit(self, transport)
    cdef _done(self, transport, int res)
    cdef clear(self)


cdef class RecvOp(Operation):
    # A stream's recv into a buffer of its own: used when the kernel gives
    # the loop no provided-buffer ring.
    cdef:
        SocketStream stream
        bytearray buf


cdef class RecvSelectOp(Operation):
    # A stream's (multishot) recv into the loop's receive buffers: one
    # completion per chunk, the buffer named in the CQE flags, handed back
    # to the pool as soon as the chunk has been copied out.
    cdef:
        SocketStream stream
        RecvBuffers pool


cdef class ReadableOp(Operation):
    # A BufferedProtocol stream's poll for its socket to be readable, in
    # direct receive (stream.pxi): the recv itself is a plain system call
    # into the protocol's buffer, once it is readable.
    cdef:
        SocketStream stream


cdef class SendOp(Operation):
    # The one send of a stream in flight: up to SEND_IOV_MAX of its queued
    # chunks in one send/sendmsg.  `keep` holds the chunks' memory until the
    # final completion, whatever becomes of the stream's queue meanwhile.
    cdef:
        SocketStream stream
        object keep
        msghdr msg
        iovec iov[SEND_IOV_MAX]


cdef class AcceptOp(Operation):
    # The (multishot) accept of a listening socket; completions go to its
    # Listener (listener.pxi).
    cdef object listener


cdef class PollOp(Operation):
    # One-shot readiness poll behind add_reader / add_writer, re-armed after
    # each event: asyncio's level-triggered semantics.
    cdef:
        int fd
        unsigned mask           # POLLIN or POLLOUT
        Handle handle           # the callback; None once removed
        object fileobj          # what add_reader/add_writer was given
        unsigned long long dev  # which file the fd named then (st_dev, st_ino)
        unsigned long long ino
        bint queued             # waiting in the loop's poll_queue


cdef class FileTable:
    cdef:
        ar_ring *ring           # the loop's ring (borrowed)
        unsigned size           # slots registered; 0 when off
        list free               # free slots, a stack
        readonly unsigned in_use
        readonly unsigned long long fallbacks   # sockets left on plain fds
        bint enabled
    cdef int open(self, ar_ring *ring, bint enabled) except -1
    cdef int alloc(self, int fd)
    cdef release(self, int slot)
    cdef close(self)


cdef class BaseLoop:
    cdef:
        ar_ring ring
        bint ring_live
        bint want_fixed_files
        FileTable files
        object ring_thread      # native id of the thread that drives the ring (SINGLE_ISSUER)
        int pid                 # the process that created the ring
        int inflight            # operations submitted and not finally completed

        object ready            # deque of Handle
        object ready_append
        object ready_popleft
        list timers             # binary heap of TimerHandle on (when, seq)
        unsigned long long timer_seq
        Py_ssize_t timer_cancelled_count
        double clock_resolution

        # cross-thread wake-up: written only while the loop may be asleep
        int wakeup_fd
        bint sleeping
        bint wakeup_written
        uint64_t wakeup_writes  # eventfd writes made by _wake (statistics)
        uint64_t cq_overflows   # drains that found the kernel holding completions
        uint64_t file_requests  # requests of aioring.open() and friends (files.pxi)
        # loop.stats() (stats.pxi)
        uint64_t completions    # CQEs reaped
        uint64_t slow_callbacks # callbacks that ran slow_callback_duration or longer
        double slow_duration    # slow_callback_duration
        uint64_t slow_ticks     # callback_ticks() below which no callback is slow
        int callback_clock      # what callbacks are timed with: CLOCK_COUNTER, CLOCK_MONOTONIC_NS
                                # or CLOCK_OFF (AIORING_CALLBACK_CLOCK=0)
        InternalRead wakeup_op

        # signals: the wake-up fd given to signal.set_wakeup_fd
        int signal_rfd
        int signal_wfd
        InternalRead signal_op
        public object _ssock    # read end (names as in asyncio's loop)
        public object _csock    # write end, given to signal.set_wakeup_fd

        public bint _debug
        public bint _stopping
        public bint _closed
        public object _thread_id
        public object _current_handle
        public dict _signal_handlers

        dict readers            # fd -> PollOp (add_reader)
        dict writers            # fd -> PollOp (add_writer)
        dict poll_batch         # fd -> [reader op, writer op] ready this iteration
        list poll_queue         # PollOps to submit with the next enter
        object epoll_probe      # an epoll set, asked what epoll would refuse
        PyObject *user_ops      # the program's operations in flight (a linked list)
        PyObject *resident_ops  # operations their owners reuse, in flight or idle (a linked list)
        # SocketStreams with data to send at the next enter, in the order
        # their writes came (a linked list through send_next, which holds a
        # reference to each: no allocation per write or per iteration)
        PyObject *send_head
        PyObject *send_tail
        RecvBuffers recv_buffers
        SpareBytes spare_bytes
        bint recv_multishot     # the kernel takes multishot recvs (6.0+)
        bint direct_recv        # BufferedProtocol streams may receive directly (stream.pxi)
        bint accept_multishot   # the kernel takes multishot accepts (5.19+)
        dict listeners          # listening fd -> Listener
        public object sock_stash    # socket -> bytes a cancelled sock_recv left
        object sock_receiving       # socket -> its SockRecvOp in flight
        object accept_stash         # socket -> [(conn, addr)] a cancelled sock_accept left
        object dgram_stash          # socket -> [(data, addr)] a cancelled sock_recvfrom left
        object sock_errors          # socket -> the error a cancelled sock_recv took
        unsigned long long iteration
        int pending_releases    # closed streams waiting for their final completions

    cdef double _time(self) noexcept
    cdef _check_closed_fast(self)
    cdef inline int _check_fork(self) except -1
    cdef _check_thread_fast(self)
    cdef Handle _call_soon(self, object callback, object args, object context)
    cdef TimerHandle _call_at(self, double when, object callback, object args, object context)
    cdef _timer_push(self, TimerHandle timer)
    cdef TimerHandle _timer_pop(self)
    cdef _timers_purge(self)
    cdef _run_once(self)
    cdef _poll(self, int64_t timeout_ns)
    cdef _process_completions(self)
    cdef int _drain_completions(self) except -1
    cdef inline void _track(self, Operation op) noexcept
    cdef inline void _track_user(self, Operation op) noexcept
    cdef inline void _unlist(self, Operation op) noexcept
    cdef void _list_resident(self, Operation op) noexcept
    cdef void _unlist_resident(self, Operation op) noexcept
    cdef list _user_ops(self)
    cdef _forget_user_ops(self)
    cdef _submit_internal_read(self, InternalRead op)
    cdef _queue_poll(self, PollOp op)
    cdef _flush_poll_queue(self)
    cdef bint _same_file(self, PollOp op)
    cdef _submit_recv(self, SocketStream stream)
    cdef int _queue_stream_send(self, SocketStream stream) except -1
    cdef int _flush_send_queue(self) except -1
    cdef _drop_send_queue(self)
    cdef _send_written(self)
    cdef _finish_releases(self)
    cdef _cancel_op(self, Operation op)
    cdef _cancel_now(self, Operation op)
    cdef _poll_done(self, PollOp op, int res)
    cdef _queue_poll_batch(self)
    cdef object _add_poll(self, dict table, unsigned mask, object fd, object callback, object args)
    cdef bint _remove_poll(self, dict table, object fd)
    cdef _internal_read_done(self, InternalRead op, int res)
    cdef _wake(self)
    cdef _open_ring(self)
    cdef _arm_internal_reads(self)
    cdef list _ops_in_flight(self)
    cdef _orphan_operations(self)
    cdef _move_ring_to_this_thread(self)
    cdef _prepare_ring_for_thread(self)
    cdef _shutdown_ring(self)
