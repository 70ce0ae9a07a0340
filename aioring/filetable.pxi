# The fixed-file table: which slot of the ring's registered (sparse) file
# table holds which socket.  Requests on a socket with a slot name the slot
# (IOSQE_FIXED_FILE), which spares the kernel a file lookup per request.
#
# Lifetime, in this order: the owner cancels the socket's requests and waits
# for their final completions, then releases the slot, then closes the fd.
# A slot holds the file, not the fd number: a reused fd number can never
# reach an old slot, and a slot released late only keeps the old socket open
# longer.  The table can be switched off (AIORING_FIXED_FILES=0, or
# aioring.Loop(fixed_files=False)); when it is off or full, sockets use
# their plain fd.

cdef class FileTable:

    cdef int open(self, ar_ring *ring, bint enabled) except -1:
        cdef unsigned size = FIXED_FILES_MAX
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY and soft < size:
            size = soft             # the kernel refuses a larger table
        self.ring = ring
        self.size = 0
        self.in_use = 0
        self.free = []
        self.enabled = False
        if enabled and ar_ring_register_files_sparse(ring, size) == 0:
            self.size = size
            self.enabled = True
            # hand out low slots first
            self.free = list(range(size - 1, -1, -1))
        return 0

    cdef int alloc(self, int fd):
        """A slot now holding fd's file, or -1: use the plain fd."""
        cdef int slot
        if not self.free:
            self.fallbacks += 1
            return -1
        slot = self.free.pop()
        if ar_ring_update_files(self.ring, slot, &fd, 1) != 1:
            self.free.append(slot)
            self.fallbacks += 1
            return -1
        self.in_use += 1
        return slot

    cdef release(self, int slot):
        cdef int empty = -1
        if slot < 0 or not self.enabled:
            return
        ar_ring_update_files(self.ring, slot, &empty, 1)
        self.free.append(slot)
        self.in_use -= 1

    cdef close(self):
        # the ring goes, and its table with it
        self.enabled = False
        self.free = []
        self.in_use = 0
