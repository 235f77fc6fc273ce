"""Typical SIP messages for the pseudo-variable tests (CRLF line ends)."""

INVITE = """INVITE sip:bob@biloxi.example.com:5070;transport=tcp;lr SIP/2.0
Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds;rport
Via: SIP/2.0/UDP 10.0.0.7:5062;branch=z9hG4bKnashds8;received=192.0.2.3
Max-Forwards: 70
To: Bob <sip:bob@biloxi.example.com>
From: "Alice Liddell" <sip:alice@atlanta.example.com>;tag=1928301774
Call-ID: a84b4c76e66710@pc33.atlanta.example.com
CSeq: 314159 INVITE
Contact: <sip:alice@pc33.atlanta.example.com;transport=udp>;expires=300
User-Agent: TestPhone/1.0
P-Asserted-Identity: "Alice" <sip:+15551234@atlanta.example.com;user=phone>
Proxy-Authorization: Digest username="alice@atlanta.example.com", realm="biloxi.example.com", nonce="dcd98b7102dd2f0e", uri="sip:bob@biloxi.example.com", response="6629fae49393a05397450978507c4ef1", algorithm=MD5, qop=auth, nc=00000001, cnonce="0a4f113b", opaque="5ccc069c403ebaf9"
Content-Type: application/sdp
Content-Length: 33

v=0
o=alice 1 1 IN IP4 1.2.3.4
"""

REGISTER = """REGISTER sip:registrar.biloxi.example.com SIP/2.0
Via: SIP/2.0/TCP bobspc.biloxi.example.com:5060;branch=z9hG4bKnashds7
Max-Forwards: 70
To: Bob <sip:bob@biloxi.example.com>
From: Bob <sip:bob@biloxi.example.com>;tag=456248
Call-ID: 843817637684230@998sdasdh09
CSeq: 1826 REGISTER
Contact: <sip:bob@192.0.2.4>;expires=7200;q=0.7, "Mobile" <sip:bob@198.51.100.9:5080>;q=0.1
Contact: sip:bob@203.0.113.5;methods="INVITE,BYE"
Authorization: Digest username="bob", realm="biloxi.example.com", nonce="ea9c8e88df84f1cec4341ae6cbe5a359", uri="sip:registrar.biloxi.example.com", response="dfe56131d1958046689d83306477ecc"
Expires: 7200
Content-Length: 0

"""

OK200 = """SIP/2.0 200 OK
Via: SIP/2.0/UDP server10.biloxi.example.com;branch=z9hG4bK4b43c2ff8.1;received=192.0.2.3
Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds;received=192.0.2.1
To: Bob <sip:bob@biloxi.example.com>;tag=a6c85cf
From: Alice <sip:alice@atlanta.example.com>;tag=1928301774
Call-ID: a84b4c76e66710@pc33.atlanta.example.com
CSeq: 314159 INVITE
Contact: <sip:bob@192.0.2.4>
Content-Length: 0

"""

REFER = """REFER sip:carol@chicago.example.com SIP/2.0
Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK9922ef992
To: <sip:carol@chicago.example.com>
From: <sip:alice@atlanta.example.com>;tag=193402342
Call-ID: 898234234@agb.example.com
CSeq: 93809823 REFER
Refer-To: <sip:dave@denver.example.org?Replaces=12345%40192.168.118.3>
P-Preferred-Identity: "Alice" <sip:alice.pref@atlanta.example.com>
Remote-Party-ID: "Alice" <sip:+15550001@atlanta.example.com>;party=calling
Diversion: <sip:fwd@atlanta.example.com>;reason=unconditional
Contact: <sip:a@atlanta.example.com>
Max-Forwards: 70
Content-Length: 0

"""


def crlf(text: str) -> bytes:
    """The message with CRLF line ends (the body keeps its own lines)."""
    return text.replace("\n", "\r\n").encode()
