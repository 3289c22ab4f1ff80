# C-level per-group decision over a domain table, for the DNS filter and the NFQUEUE loop.
from libc.stdint cimport uint8_t, uint64_t
from fastpath.table cimport TableView

cpdef enum Action:
    ALLOW = 0
    BLOCK = 1

cpdef enum Reason:
    DEFAULT = 0        # nothing in the policy matched: the group's default action
    PADLOCKED = 1      # a padlocked category (IWF, CTIRU, trust-locked lists): nothing overrides it
    SCHOOL_DENY = 2    # the most specific school override is a deny
    SCHOOL_ALLOW = 3   # the most specific school override is an allow
    CATEGORY = 4       # a category the group blocks

cpdef enum:
    # What a batch writes as the action of an item that yielded no name (see its status).
    NO_VERDICT = 255

cdef struct GroupPolicyC:
    uint64_t blocked       # categories this group blocks
    uint64_t padlocked     # categories blocked for everyone, beyond any allow
    uint64_t allow         # school allow-list categories that apply to this group
    uint64_t deny          # school deny-list categories that apply to this group
    int default_action     # ALLOW, or BLOCK for allowlist-only groups such as exams

cdef struct VerdictC:
    int action             # Action
    int reason             # Reason
    uint64_t bits          # the categories behind the reason (matched padlocked/deny/allow/blocked bits)
    uint64_t categories    # every category the name is in (OR over all matching entries)
    int matched_len        # the deciding suffix is the last matched_len bytes of the name; -1 for DEFAULT

# Decides for the normalised name[:n]. Order: any padlocked bit blocks; then the most specific suffix
# carrying an allow or deny bit decides (deny wins at the same suffix); then blocked categories; then
# the default action. Returns out.action.
cdef int decide_c(const TableView* t, const GroupPolicyC* p, const char* name, int n,
                  VerdictC* out) noexcept nogil

cdef class GroupPolicy:
    cdef GroupPolicyC c
