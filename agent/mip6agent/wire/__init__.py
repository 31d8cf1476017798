"""Pure Mobile IPv6 codecs: no sockets, no clocks, no kernel.

Every decoder raises :class:`DecodeError` (and nothing else) on malformed input.
"""

from .checksum import internet_checksum, upper_layer_checksum, verify_upper_layer_checksum
from .constants import BAStatus, BEStatus, ICMPv6Type, MHType, MobilityOptionType, NDOptionType
from .errors import DecodeError
from .icmpv6 import (
    AdvertisementInterval,
    HAADReply,
    HAADRequest,
    HomeAgentInformation,
    ICMPv6Message,
    LinkLayerAddress,
    MobilePrefixAdvertisement,
    MobilePrefixSolicitation,
    MTUOption,
    NDOption,
    NeighborAdvertisement,
    NeighborSolicitation,
    PrefixInformation,
    RouterAdvertisement,
    RouterSolicitation,
    UnknownICMPv6,
    UnknownNDOption,
    decode_icmpv6,
    encode_icmpv6,
)
from .ipv6 import (
    DestinationOptions,
    HomeAddressOption,
    OtherExtensionHeader,
    Packet,
    RoutingHeaderType2,
    UnknownDestinationOption,
    build_packet,
    parse_packet,
)
from .mobility_header import (
    MOBILITY_MESSAGE_TYPES,
    BindingAck,
    BindingError,
    BindingRefreshRequest,
    BindingUpdate,
    CareofTest,
    CareofTestInit,
    HomeTest,
    HomeTestInit,
    MobilityMessage,
    UnknownMessage,
    decode_mh,
    encode_mh,
    parse_mh,
)
from .mobility_options import (
    AlternateCareofAddress,
    BindingAuthorizationData,
    BindingRefreshAdvice,
    MessageAuthentication,
    MessageIdentification,
    MobileNodeIdentifier,
    MobilityOption,
    NonceIndices,
    UnknownMobilityOption,
)

__all__ = [name for name in dir() if not name.startswith("_")]
