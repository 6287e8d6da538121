#!/usr/bin/perl
# Verify the DKIM signatures of the message on stdin with Mail::DKIM, an implementation
# independent of dkimpy. Keys come from the arguments ("name=TXT value"), not from DNS.
# Prints one line per signature: "<result> <algorithm> <selector>".
use strict;
use warnings;
use Mail::DKIM::Verifier;
use Net::DNS::RR;

my %records = map { split /=/, $_, 2 } @ARGV;
{
    no warnings 'redefine';
    *Mail::DKIM::DNS::query = sub {
        my ($name, $type) = @_;
        my $value = $records{lc $name} or return ();
        my @strings = map { qq("$_") } unpack('(A255)*', $value);
        return (Net::DNS::RR->new(qq($name. 60 IN TXT @strings)));
    };
}
my $verifier = Mail::DKIM::Verifier->new();
local $/;
my $message = <STDIN>;
$verifier->PRINT($message);
$verifier->CLOSE();
for my $signature ($verifier->signatures) {
    printf "%s %s %s (%s)\n", $signature->result, $signature->algorithm, $signature->selector,
        $signature->result_detail;
}
