# Receive buffers: the loop's provided-buffer ring.
#
# Stream receives are multishot recvs that let the kernel pick a buffer from
# this pool for each chunk it receives (IOSQE_BUFFER_SELECT).  The loop
# copies the chunk out (into `bytes`, or into a BufferedProtocol's buffer)
# while it processes the completion and hands the buffer straight back, so
# buffers are only ever held between the kernel's completion and the loop's
# next pass over the CQ, and an idle connection holds none.
#
# The ring has room for RECV_BUFFERS_MAX buffers; RECV_BUFFERS_START are
# provided at first and twice as many each time the kernel runs out (a recv
# then ends with ENOBUFS and is re-armed; at the maximum the data waits in
# the socket until buffers come back).  Memory is reserved up front but
# becomes resident only as buffers are provided.  Tests make the pool run
# dry with AIORING_RECV_BUFFERS (the start, e.g. 1) and
# AIORING_RECV_BUFFERS_MAX (a power of two: the most there will ever be).

cdef unsigned RECV_BUFFER_SIZE = 64 * 1024
cdef unsigned RECV_BUFFERS_START = 64
cdef unsigned RECV_BUFFERS_MAX = 2048
cdef uint16_t RECV_BUFFER_GROUP = 0

from libc.string cimport memset


cdef class RecvBuffers:
    cdef int setup(self, ar_ring *ring):
        """0 when the pool is registered with `ring`, else -errno (the
        loop then receives into buffers of its own)."""
        cdef int ret
        if self.ready:
            return 0
        if self.error:
            return self.error       # (tried once: not a syscall per receive)
        if not _feature_on('AIORING_BUFFER_RING'):
            self.error = -EOPNOTSUPP
            return self.error
        start = int(os.environ.get('AIORING_RECV_BUFFERS', RECV_BUFFERS_START))
        most = int(os.environ.get('AIORING_RECV_BUFFERS_MAX', RECV_BUFFERS_MAX))
        ret = ar_bufring_setup(ring, &self.br, RECV_BUFFER_GROUP, most,
                               RECV_BUFFER_SIZE, max(1, min(start, most)))
        if ret < 0:
            self.error = ret
            return ret
        self.ready = True
        return 0

    cdef char *addr(self, uint16_t bid) noexcept:
        return <char *>ar_bufring_addr(&self.br, bid)

    cdef void recycle(self, uint16_t bid) noexcept:
        self.used += 1
        ar_bufring_recycle(&self.br, bid)
        ar_bufring_publish(&self.br)

    cdef exhausted(self, unsigned long long iteration):
        # A recv found no buffer: provide twice as many, once per iteration
        # however many recvs ran dry in it.
        self.enobufs += 1
        if self.grown_at != iteration:
            self.grown_at = iteration
            ar_bufring_grow(&self.br, self.br.provided)

    cdef free(self, ar_ring *ring):
        # Only once no recv can still write into the pool.
        if self.ready:
            ar_bufring_free(ring, &self.br)
            self.ready = False

    cdef forget(self):
        # The ring went away with recvs possibly still holding buffers: keep
        # the memory mapped for good rather than unmap what the kernel may
        # still write.
        self.ready = False
        memset(&self.br, 0, sizeof(self.br))

    cdef dict info(self, ar_ring *ring):
        # recv_buffers_available: how many of the provided buffers the kernel
        # holds ready (PBUF_STATUS, Linux 6.8; None before, or without a
        # pool).  Every buffer a recv takes is handed back while the loop
        # processes its completion, so outside the loop's pass over the CQ
        # this equals recv_buffers_provided: fewer would be a buffer lost.
        available = None
        if self.ready:
            n = ar_bufring_available(ring, &self.br)
            if n >= 0:
                available = n
        return {
            'recv_buffer_ring': bool(self.ready),
            'recv_buffers_available': available,
            'recv_buffer_size': RECV_BUFFER_SIZE,
        }

    cdef unsigned provided(self) noexcept:
        return self.br.provided if self.ready else 0
