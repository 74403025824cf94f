"""Extinction groups (xtalhpc.spacegroups.extinction_groups) against the published classes."""
from __future__ import annotations

import itertools

import pytest

from xtalhpc.spacegroups import (N_EXTINCTION_GROUPS, _extinction_partition, crystal_system, extinction_group,
                                 extinction_group_names, extinction_groups)

#: The 99 extinction groups of Baggett et al. (arXiv:2604.23811, 2026) as the space-group numbers of
#: each class, from the table published with their code (scattering/paper-ai-diffraction,
#: assets/lookups/canonical_extinction_to_space_group.csv); they follow the extinction symbols of
#: International Tables A with the settings of each symbol merged.
PUBLISHED_99 = [
    [3,6,10], [4,11], [7,13], [14], [5,8,12], [9,15], [16,25,47], [17], [18], [19], [26,28,51], [31,59],
    [27,49], [29,57], [30,53], [32,55], [33,62], [34,58], [54], [50], [61], [60], [56], [52], [48],
    [21,35,38,65], [20], [39,67], [36,40,63], [41,64], [37,66], [68], [23,24,44,71], [46,74], [45,72], [73],
    [22,42,69], [43], [70], [75,81,83,89,99,111,115,123], [90,113], [77,84,93], [94], [76,78,91,95], [92,96],
    [105,112,131], [114], [100,117,127], [106,135], [101,116,132], [103,124], [102,118,136], [104,128],
    [85,129], [86], [137], [125], [133], [138], [130], [134], [126], [79,82,87,97,107,119,121,139], [80,98],
    [109,122], [108,120,140], [110], [88], [141], [142],
    [143,147,149,150,156,157,162,164,168,174,175,177,183,187,189,191], [144,145,151,152,153,154],
    [159,163,186,190,194], [158,165,185,188,193], [146,148,155,160,166], [161,167], [173,176,182],
    [171,172,180,181], [169,170,178,179], [184,192], [195,200,207,215,221], [198], [208], [212,213],
    [218,223], [205], [201,224], [222], [197,199,204,211,217,229], [214], [220], [206], [230],
    [196,202,209,216,225], [210], [219,226], [203,227], [228], [1,2]
]
PUBLISHED_99_COUNT = 99
#: The two pairs of ITA extinction-symbol rows whose reflection conditions are identical.
ITA_SPLIT_PAIRS = (
    ((144, 145, 151, 152, 153, 154), (171, 172, 180, 181)),  # P 3_1 - - / P 6_2 - -: 00l: l = 3n
    ((198,), (208,)),                                          # P 2_1 - - / P 4_2 - -: h00: h = 2n
)


def _absent(n, hmax=6):
    import gemmi

    ops = gemmi.find_spacegroup_by_number(n).operations()
    r = range(-hmax, hmax + 1)
    return {h for h in itertools.product(r, r, r) if h != (0, 0, 0) and ops.is_systematically_absent(list(h))}


def test_count_against_the_published_99():
    groups = extinction_groups()
    assert len(groups) == N_EXTINCTION_GROUPS == 97
    # the published 99 keep two pairs apart whose systematic absences are identical (gemmi):
    for a, b in ITA_SPLIT_PAIRS:
        assert _absent(a[0]) == _absent(b[0]) and extinction_group(a[0]) == extinction_group(b[0])
        assert set(groups[extinction_group(a[0])]) == set(a) | set(b)
    assert len(groups) + len(ITA_SPLIT_PAIRS) == PUBLISHED_99_COUNT == len(PUBLISHED_99)
    # and every other class is one of theirs
    published = {tuple(sorted(c)) for c in PUBLISHED_99}
    ours = set(groups)
    merged = {tuple(sorted(a + b)) for a, b in ITA_SPLIT_PAIRS}
    assert ours - published == merged
    assert published - ours == {tuple(sorted(x)) for pair in ITA_SPLIT_PAIRS for x in pair}


def test_partition_properties():
    groups = extinction_groups()
    flat = sorted(n for g in groups for n in g)
    assert flat == list(range(1, 231))  # a partition of the 230 groups
    assert [g[0] for g in groups] == sorted(g[0] for g in groups)  # ordered by smallest member
    assert groups[0] == (1, 2) and groups[extinction_group(14)] == (14,)
    for g in groups:  # one crystal family per class
        fam = {("hexagonal" if crystal_system(n) == "trigonal" else crystal_system(n)) for n in g}
        assert len(fam) == 1
    # well-known classes of International Tables (absences equal, Laue classes merged)
    for cls in [(3, 6, 10), (196, 202, 209, 216, 225), (75, 81, 83, 89, 99, 111, 115, 123), (33, 62),
                (26, 28, 51), (161, 167), (212, 213), (92, 96)]:
        assert groups[extinction_group(cls[0])] == cls
    assert extinction_group(146) != extinction_group(143)  # rhombohedral centring is an absence
    names = extinction_group_names()
    assert len(names) == 97 and names[extinction_group(14)] == "14" and names[0] == "1,2"


def test_hkl_range_is_large_enough():
    assert _extinction_partition(4) == _extinction_partition(6) == _extinction_partition(8)


def test_bad_space_group():
    from xtalhpc.errors import InputError

    with pytest.raises(InputError, match="outside 1-230"):
        extinction_group(231)
