"""ELAsTiCC's class taxonomy (elasticc `taxonomy/`): the leaf classIds alerts carry as truth."""

#: classId -> class name, for the classes the simulated stream holds
CLASS_NAMES: dict[int, str] = {
    111: "SN Ia", 112: "SN Ib/c", 113: "SN II", 114: "SN Iax", 115: "SN 91bg",
    121: "KN", 122: "M-dwarf flare", 123: "Dwarf nova", 124: "uLens",
    131: "SLSN", 132: "TDE", 133: "ILOT", 134: "CART", 135: "PISN",
    211: "Cepheid", 212: "RR Lyrae", 213: "Delta Scuti", 214: "EB",
    221: "AGN",
}  # fmt: skip
