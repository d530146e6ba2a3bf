"""Domain-separation labels: each signed, encrypted or derived value names its purpose first.

A signature or key made for one purpose can therefore never be replayed as another.
"""

DEVICE_ID = b"mailslot/v1/device-id"
DEVICE_RECORD = b"mailslot/v1/device-record"
DEVICE_LIST = b"mailslot/v1/device-list"
DEVICE_LIST_APPROVAL = b"mailslot/v1/device-list-approval"
RECOVERY_KEY = b"mailslot/v1/recovery-key"
RECOVERY_CLAIM = b"mailslot/v1/recovery-claim"
CONTENT = b"mailslot/v1/content"
BODY = b"mailslot/v1/body"
WRAP = b"mailslot/v1/wrap"
REQUEST = b"mailslot/v1/request"
LINK_REQUEST = b"mailslot/v1/link-request"
LINK_RESPONSE = b"mailslot/v1/link-response"
LINK_ACCOUNT_KEY = b"mailslot/v1/link-account-key"
KEYSTORE = b"mailslot/v1/keystore"
BLOB = b"mailslot/v1/blob"
RICH_BODY = b"mailslot/v1/rich-body"
