"""What the adapter reaches below pjsua2, through ctypes on the loaded `_pjsua2` module: the C
symbols and structure layouts it declares (`symbols`), the reader of a received request's text
and source address out of `pjsip_rx_data` (`rxdata`), the pjsip module in front of pjsua that
asks admission about every new out-of-dialog request (`door`), and the probes of what the
installed build can do (`build`). Everything here runs on the pjsua thread only.
"""
